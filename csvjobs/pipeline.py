"""The provider contract under the import path providers were written against before csvjobs had packages, so
that a `--provider module:attr` plugin importing from csvjobs.pipeline keeps working. New code imports
csvjobs.providers.contract (and csvjobs.providers.noop for NoopProvider)."""

from csvjobs.errors import JobLostError, PermanentError, ProviderAccessError, TransientError
from csvjobs.providers.contract import (
    Checkpoint,
    GeneratedImage,
    GeneratedPrompts,
    LogStep,
    Provider,
    RateLimiter,
    RowContext,
    RowOutcome,
    StylePrompt,
)
from csvjobs.providers.noop import NoopProvider

__all__ = [
    "Checkpoint", "GeneratedImage", "GeneratedPrompts", "JobLostError", "LogStep", "NoopProvider", "PermanentError",
    "Provider", "ProviderAccessError", "RateLimiter", "RowContext", "RowOutcome", "StylePrompt", "TransientError",
]
