"""The language a batch writes in for shoppers (alt text, tags, any text in an image), and the market its scenes
are set in.

Chosen once per upload, in this order: `upload --language TAG` (a BCP 47 tag: pt-BR, de, en-GB); the settings'
default (CSVJOBS_LANGUAGE); a localised shop export's own column names (WooCommerce exports in the shop's language:
its pt-BR headers say pt-BR); the products' titles and descriptions, read by py3langid (its model ships inside the
package: nothing is downloaded); English, when the text is too short or too unclear to tell. Upload says which it
chose and why. When the file has no country column and no --country, the language's region gives the country
(pt-BR: BR); a language without a region leaves it empty rather than guess. langcodes turns a tag into the name the
prompt uses ("Portuguese (Brazil)")."""

from __future__ import annotations

import functools
from typing import Any, Literal

from pydantic import BaseModel

from csvjobs.languages import language_name, region_of, standard_tag

# A localised WooCommerce export's language (shops/columns.py, woocommerce_language) as the tag its translation is for.
WOOCOMMERCE_HEADER_TAGS = {"pt": "pt-BR", "es": "es", "de": "de", "fr": "fr", "it": "it", "nl": "nl"}
# Below this many letters of titles and descriptions, or this confidence, the text does not tell: English.
MIN_LETTERS = 40
MIN_CONFIDENCE = 0.6
# Languages a detector may name that no shop writes in (Lorem ipsum reads as Latin): not a shop's language.
NOT_SHOP_LANGUAGES = frozenset({"la", "eo", "vo"})
FALLBACK = "en"


class LanguageChoice(BaseModel):
    """The batch's language, where it came from and why, and the country its region gives."""

    tag: str
    name: str
    source: Literal["option", "settings", "headers", "text", "fallback"]
    reason: str
    region_country: str = ""

    def describe(self) -> str:
        """One line for upload's output."""
        return f"{self.tag} ({self.name}), {self.reason}"


def alt_language_tags(value: str | list[str] | None) -> list[str]:
    """--alt-languages es,en as standard tags, each once."""
    if not value:
        return []
    parts = value.split(",") if isinstance(value, str) else [p for item in value for p in item.split(",")]
    tags = [standard_tag(part, "--alt-languages") for part in parts if part.strip()]
    return list(dict.fromkeys(tags))


@functools.cache
def _identifier() -> Any:
    # Loaded on first use (about a second): only an upload that must read its products' language pays for it.
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detect(texts: list[str]) -> tuple[str, float] | None:
    """The language of the products' texts and the detector's confidence, or None when they are too short."""
    text = " ".join(t for t in texts if t).strip()
    if sum(ch.isalpha() for ch in text) < MIN_LETTERS:
        return None
    language, confidence = _identifier().classify(text[:20_000])
    return str(language), float(confidence)


def choose(option: str | None, default: str | None, header_language: str | None,
           texts: list[str]) -> LanguageChoice:
    """The batch's language: the option, the settings' default, the export's headers, the text, or English."""
    if option:
        tag = standard_tag(option)
        return _choice(tag, "option", "as --language asked")
    if default:
        tag = standard_tag(default, "CSVJOBS_LANGUAGE")
        return _choice(tag, "settings", "the default in CSVJOBS_LANGUAGE")
    if header_language in WOOCOMMERCE_HEADER_TAGS:
        tag = WOOCOMMERCE_HEADER_TAGS[header_language]
        return _choice(tag, "headers", "from the WooCommerce export's own column names (--language overrides)")
    found = detect(texts)
    if found is None:
        return _choice(FALLBACK, "fallback", "the default: the titles and descriptions are too short to tell "
                       "(--language sets it)")
    language, confidence = found
    if confidence < MIN_CONFIDENCE or language in NOT_SHOP_LANGUAGES:
        return _choice(FALLBACK, "fallback", f"the default: the products' text does not say clearly (it reads "
                       f"most like {language_name(language)}, {confidence:.0%} sure; --language sets it)")
    return _choice(standard_tag(language), "text", f"read from the products' titles and descriptions "
                   f"({confidence:.0%} sure; --language overrides)")


def _choice(tag: str, source: Literal["option", "settings", "headers", "text", "fallback"],
            reason: str) -> LanguageChoice:
    return LanguageChoice(tag=tag, name=language_name(tag), source=source, reason=reason,
                          region_country=region_of(tag))
