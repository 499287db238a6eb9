"""The docs stay true: docs/commands.md is the commands' own --help (regenerate it with `python
docs/generate_reference.py`), and every word of the glossary is one the code uses."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("generate_reference", ROOT / "docs" / "generate_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_command_reference_is_the_commands_own_help() -> None:
    generated = _generator().reference()
    written = (ROOT / "docs" / "commands.md").read_text(encoding="utf-8")
    assert written == generated, "docs/commands.md is out of date: run python docs/generate_reference.py"


def test_every_glossary_word_is_used_in_the_code() -> None:
    glossary = (ROOT / "docs" / "glossary.md").read_text(encoding="utf-8")
    code = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "csvjobs").rglob("*.py"))
    code += "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "sql").rglob("*.sql"))
    words = re.findall(r"^\| \*\*([^*]+)\*\* \| `([^`]+)`", glossary, flags=re.M)
    assert len(words) >= 15
    for word, identifier in words:
        assert identifier in code, f"glossary: {word!r} says the code calls it {identifier!r}, which it does not"


def test_sql_function_names_follow_the_rule() -> None:
    """The rule (docs/glossary.md): a function clients call is named verb_csv_noun (claim_csv_row_jobs,
    review_csv_images; the seed's claim_next_csv_row_job and cleanup_stale_csv_workers keep two words before
    csv), and a helper other functions call is named csv_noun_... (csv_lock_owned_batch)."""
    names = set()
    for path in (ROOT / "sql").rglob("*.sql"):
        names |= set(re.findall(r"CREATE OR REPLACE FUNCTION (?:public\.)?([a-z_0-9]+)\(", path.read_text()))
    assert len(names) > 30
    wrong = sorted(n for n in names if not re.fullmatch(r"csv_[a-z_]+|[a-z]+(?:_[a-z]+)?_csv_[a-z_]+", n))
    assert wrong == []
