"""Cells a spreadsheet would run as formulas (CSV injection, OWASP): what counts as one, and the two ways csvjobs
makes a cell safe. A spreadsheet skips leading white space, zero-width characters and a byte-order mark before it
looks for a formula, and takes the fullwidth ＝ ＋ － ＠ for = + - @, so a cell is risky when its first other
character is one of those, or when it starts with a tab, carriage return or newline."""

from __future__ import annotations

import unicodedata

FORMULA_PREFIXES = frozenset("=+-@＝＋－＠")
CONTROL_STARTS = ("\t", "\r", "\n")


def _skipped(ch: str) -> bool:
    """White space (NBSP included), zero-width and other format characters (ZWSP, ZWJ, BOM): invisible."""
    return ch.isspace() or unicodedata.category(ch) == "Cf"


def starts_like_formula(text: str) -> bool:
    """Whether a spreadsheet could take the cell for a formula."""
    if text.startswith(CONTROL_STARTS):
        return True
    for ch in text:
        if not _skipped(ch):
            return ch in FORMULA_PREFIXES
    return False


def neutralise(value: str) -> str:
    """A cell of csvjobs' own export that a spreadsheet will not run: a risky one is prefixed with a quote, the
    rest of it kept (OWASP's advice)."""
    return "'" + value if starts_like_formula(value) else value


def generated_cell(text: str) -> str:
    """Text csvjobs generated (alt text, tags) for a shop file: its leading invisible and formula characters
    removed rather than quoted, since the shop shows the cell as it is. The shop's own values never pass here."""
    start = 0
    while start < len(text) and (_skipped(text[start]) or text[start] in FORMULA_PREFIXES):
        start += 1
    return text[start:]
