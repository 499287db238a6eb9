"""Language tags (BCP 47), in one place for every layer: a tag in its standard form, its English name (what a
prompt says), and the country its region names. langcodes does the work, with language-data's names."""

from __future__ import annotations

import langcodes

from csvjobs.errors import InputError


def standard_tag(tag: str, what: str = "--language") -> str:
    """A BCP 47 tag in its standard form (pt-br -> pt-BR), or InputError saying what is wrong and how to fix it."""
    cleaned = tag.strip().replace("_", "-")
    try:
        valid = bool(cleaned) and langcodes.tag_is_valid(cleaned)
        standard = langcodes.standardize_tag(cleaned) if valid else ""
    except (ValueError, LookupError):
        valid, standard = False, ""
    if not valid or langcodes.Language.get(standard).language in (None, "und"):
        raise InputError(f"{what} {tag!r} is not a language tag; give a BCP 47 tag such as pt-BR, de or en-GB")
    return standard


def language_name(tag: str) -> str:
    """The tag's name in English, as the prompt says it: pt-BR -> Portuguese (Brazil)."""
    return str(langcodes.Language.get(tag).display_name())


def region_of(tag: str) -> str:
    """The country a tag's region names (pt-BR -> BR), or "" when it names none (de, or a region like 419)."""
    territory = langcodes.Language.get(tag).territory or ""
    return territory if len(territory) == 2 and territory.isalpha() else ""
