"""Keeping secrets out of text that csvjobs stores, logs or prints: a provider's error may quote the API key
back (a compatible server can echo the whole Authorization header), so every such text passes through here."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

REDACTED = "[redacted]"
# Shapes of API keys and bearer tokens, masked or not (OpenAI's own errors show "sk-abc1***wxyz"): anything that
# looks like one goes, whether or not it is the configured key.
_KEY_SHAPED = re.compile(
    r"(?<![A-Za-z0-9])(?:sk|rk|pk|sess)-[A-Za-z0-9_*\-]{6,}|(?i:bearer)\s+[A-Za-z0-9._~+/*\-]{8,}=*"
)


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """text with every given secret and every key-shaped token replaced by [redacted]."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    return _KEY_SHAPED.sub(REDACTED, text)


def redact_json(value: Any, secrets: Iterable[str | None] = ()) -> Any:
    """A JSON-able value with redact() applied to all of its text (the value itself when nothing was secret, which
    is almost always: step logs pass through here on every row)."""
    text = json.dumps(value, default=str)
    cleaned = redact(text, [json.dumps(s)[1:-1] for s in secrets if s])
    return value if cleaned == text else json.loads(cleaned)
