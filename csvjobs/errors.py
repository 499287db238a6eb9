"""Errors a user can cause. The CLI prints them as one red line and exits with code 2; anything else is a bug."""


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


class NotBuiltError(CsvJobsError):
    """A command whose feature is not built yet."""
