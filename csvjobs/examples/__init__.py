"""Example files bundled with csvjobs."""

import importlib.resources
from pathlib import Path

# The bundled example, found through the package so that it works installed or not.
EXAMPLE_CSV = Path(str(importlib.resources.files("csvjobs.examples") / "products.csv"))
