"""OpenAI's errors sorted for the worker: transient (retry with backoff), permanent (fail the row now), or access
(stop the pool: no row can succeed until a setting is fixed), for the synchronous calls and the Batch API alike."""

from __future__ import annotations

import openai

from csvjobs.errors import PermanentError, ProviderAccessError, TransientError
from csvjobs.redact import redact

CONTENT_POLICY_CODES = {"content_policy_violation", "moderation_blocked", "content_filter", "safety_violation"}
# Codes that mean the model itself cannot be used by this account: no request to it can succeed.
_MODEL_CODES = {"model_not_found", "model_deprecated", "model_retired", "invalid_model", "unsupported_model"}


def _retry_after(exc: openai.APIStatusError) -> float | None:
    headers = exc.response.headers
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return max(float(value) * scale, 0.0)
            except ValueError:
                return None
    return None


def _error_field(exc: openai.APIStatusError, name: str) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error", body) if isinstance(body, dict) else {}
    value = error.get(name) if isinstance(error, dict) else None
    return str(value or "")


def _error_code(exc: openai.APIStatusError) -> str:
    return _error_field(exc, "code")


def classify_error(
    exc: openai.OpenAIError, *, model: str, model_setting: str, secrets: list[str | None]
) -> Exception:
    """Transient (retry with backoff), permanent (fail the row now), or access (stop the pool: no row can succeed
    until a setting is fixed). Messages never carry the key, nor anything shaped like one."""
    if isinstance(exc, openai.RateLimitError):
        wait = _retry_after(exc)
        if _error_code(exc) == "insufficient_quota":
            return PermanentError("the OpenAI account has no quota left (insufficient_quota)")
        return TransientError(f"rate limited by the provider (HTTP 429, retry after {wait}s)", retry_after=wait)
    if isinstance(exc, openai.APITimeoutError):
        return TransientError("the provider timed out")
    if isinstance(exc, openai.APIConnectionError):
        return TransientError(redact(f"cannot reach the provider: {exc}", secrets))
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        code = _error_code(exc)
        said = redact(exc.message[:300], secrets)
        if status == 401:
            return ProviderAccessError(
                f"the provider rejected the API key (HTTP 401 {code}): {said}; "
                "set OPENAI_API_KEY (or `csvjobs work --api-key`) to a valid key")
        if status == 403:
            return ProviderAccessError(
                f"the provider denied access (HTTP 403 {code}): {said}; use an OPENAI_API_KEY whose project may "
                f"use {model}, or set {model_setting} to a model it may use")
        if code in _MODEL_CODES or (status == 400 and _error_field(exc, "param") == "model"):
            return ProviderAccessError(
                f"the model {model!r} is unknown, retired or not available to this key (HTTP {status} {code}): "
                f"{said}; set {model_setting} to a current model")
        if status == 404:
            return ProviderAccessError(
                f"the provider answered HTTP 404 for the {model!r} request: {said}; check OPENAI_BASE_URL "
                f"(it should end in /v1) and {model_setting}")
        if status >= 500 or status in (408, 409):
            return TransientError(f"the provider answered HTTP {status}", retry_after=_retry_after(exc))
        if code in CONTENT_POLICY_CODES:
            return PermanentError(f"refused by the provider's content policy ({code}): {said}")
        return PermanentError(f"the provider rejected the request (HTTP {status} {code}): {said}")
    return TransientError(redact(f"provider error: {exc}", secrets))
