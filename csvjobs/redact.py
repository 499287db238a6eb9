"""Keeping secrets out of text that csvjobs stores, logs or prints: a provider's error may quote the API key
back (a compatible server can echo the whole Authorization header), and a photo URL from the user's file may carry
a password (https://user:pass@host/...) or a signature in its query (...?X-Amz-Signature=...), which an error about
it would quote; so every such text passes through here. safe_url() is the one way a URL is shown."""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterable
from typing import Any

REDACTED = "[redacted]"
# Shapes of API keys and bearer tokens, masked or not (OpenAI's own errors show "sk-abc1***wxyz"): anything that
# looks like one goes, whether or not it is the configured key.
_KEY_SHAPED = re.compile(
    r"(?<![A-Za-z0-9])(?:sk|rk|pk|sess)-[A-Za-z0-9_*\-]{6,}|(?i:bearer)\s+[A-Za-z0-9._~+/*\-]{8,}=*"
)


# A URL in free text: a scheme, ://, userinfo, an IPv6 host in brackets, then anything up to white space, a quote
# or a bracket, except the marker safe_url() leaves (a URL already shown safely is shown the same again, not as
# "...=[redacted][redacted]").
_URL = re.compile(r"(?i)\b[a-z][a-z0-9+.\-]*://(?:[^\s'\"<>()\[\]{}/@]*@)?(?:\[[0-9a-f:.%]+\])?"
                  r"(?:\[redacted\]|[^\s'\"<>()\[\]{}])*")


def safe_url(url: str) -> str:
    """A URL as csvjobs shows it anywhere (errors, logs, exports, the review page, spans): without its userinfo
    (user:password@), with every query value and the fragment replaced, the rest as given. What is fetched is the
    URL itself; only what is shown changes."""
    try:
        parts = urllib.parse.urlsplit(url.strip())
    except ValueError:
        return REDACTED
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host + (f":{port}" if port is not None else "")
    query = "&".join(f"{name.split('=', 1)[0]}={REDACTED}" if name else "" for name in parts.query.split("&")
                     ) if parts.query else ""
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, REDACTED if parts.fragment else ""))


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """text with every given secret and every key-shaped token replaced by [redacted], and every URL in it shown
    by safe_url()."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    if "://" in text:
        text = _URL.sub(lambda m: safe_url(m.group(0)), text)
    return _KEY_SHAPED.sub(REDACTED, text)


def redact_json(value: Any, secrets: Iterable[str | None] = ()) -> Any:
    """A JSON-able value with redact() applied to all of its text (the value itself when nothing was secret, which
    is almost always: step logs pass through here on every row)."""
    text = json.dumps(value, default=str)
    cleaned = redact(text, [json.dumps(s)[1:-1] for s in secrets if s])
    return value if cleaned == text else json.loads(cleaned)
