"""Errors, in one leaf module that imports nothing: those a user can cause (the CLI prints them as one red line and
exits with code 2; anything else is a bug), and how a row's processing step fails (the worker sorts those out)."""


class CsvJobsError(Exception):
    """A mistake or an unmet precondition the user can fix; the message says what, where and how."""

    exit_code = 2


class InputError(CsvJobsError):
    """A bad file, a bad option value or a bad mapping."""


class ConfigError(CsvJobsError):
    """A missing or invalid setting."""


class DatabaseError(CsvJobsError):
    """The database cannot be reached, or is not ready for csvjobs."""


class NotFoundError(CsvJobsError):
    """A batch (or other object) that does not exist, or that this user may not see."""



# --- how a step of a row's processing fails (raised by providers and storage, handled by the worker) ----------


class TransientError(Exception):
    """A failure worth retrying (timeouts, connection errors, HTTP 429 and 5xx); retry_after in seconds if known."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(Exception):
    """A failure that retrying cannot fix (bad request, content policy); the row fails at once with this reason."""


class ProviderAccessError(Exception):
    """The provider refuses the account, key or model (HTTP 401, 403, an unknown or retired model): no row can
    succeed until a setting is fixed, so the pool stops and puts its rows back without counting a retry. The
    message names the cause and the setting to fix, with any secret already removed."""


class JobLostError(Exception):
    """The worker no longer holds the job (its claim timed out and another worker took it): stop, report nothing."""


class BudgetRefused(Exception):
    """A call's worst case does not fit the batch's budget or the daily cap: the row is back to pending (no retry
    counted), either to wait for calls in flight (wait) or because the batch is paused; the message says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    @property
    def wait(self) -> bool:
        """Whether calls in flight hold the rest (try again soon) rather than the batch being paused."""
        return self.reason.startswith("wait:")
