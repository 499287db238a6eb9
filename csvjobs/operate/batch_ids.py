"""A batch named the way `progress`, `logs` and `batches` show it: its whole id, or the first characters of it
(eight are shown) when they name one of the user's batches."""

from __future__ import annotations

import re
import uuid

from csvjobs import db
from csvjobs.config import Settings
from csvjobs.errors import InputError, NotFoundError
from csvjobs.operate import queries
from csvjobs.users import resolve_user_id

_PREFIX = re.compile(r"^[0-9a-fA-F][0-9a-fA-F-]{3,35}$")


def resolve_batch(settings: Settings, text: str, what: str = "batch") -> uuid.UUID:
    """The batch a whole id or a unique prefix (4 or more characters) names; a clear error otherwise."""
    value = text.strip()
    try:
        return uuid.UUID(value)
    except ValueError:
        pass
    if not _PREFIX.match(value):
        raise InputError(f"{what} {text!r} is not a batch id: give the id `csvjobs batches` shows (its first 8 "
                         "characters are enough)")
    user_id = resolve_user_id(settings)
    _target, conn = db.open_database(settings, application_name="csvjobs-cli")
    with conn:
        found = queries.batches_with_prefix(conn, user_id, value)
    if not found:
        raise NotFoundError(f"no batch of yours starts with {value!r}; `csvjobs batches` lists yours")
    if len(found) > 1:
        shown = ", ".join(str(b)[:13] for b in found[:5]) + (", ..." if len(found) > 5 else "")
        raise InputError(f"{what} {value!r} names {len(found)} of your batches ({shown}); give more of the id")
    return found[0]
