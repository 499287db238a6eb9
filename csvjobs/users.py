"""Who the user is: --user / CSVJOBS_USER_ID, else a stable id kept in $CSVJOBS_HOME/user_id."""

from __future__ import annotations

import os
import uuid

from csvjobs.config import Settings
from csvjobs.errors import ConfigError


def resolve_user_id(settings: Settings) -> uuid.UUID:
    """The acting user's id; created once per $CSVJOBS_HOME when none is configured."""
    if settings.user_id is not None:
        return settings.user_id
    path = settings.home / "user_id"
    if path.exists():
        text = path.read_text(encoding="utf-8").strip()
        try:
            return uuid.UUID(text)
        except ValueError as exc:
            raise ConfigError(
                f"{path} does not hold a user id (a uuid); delete it to get a new one, or set CSVJOBS_USER_ID"
            ) from exc
    settings.home.mkdir(parents=True, exist_ok=True)
    user_id = uuid.uuid4()
    tmp = path.with_name(f".user_id.{os.getpid()}")
    tmp.write_text(f"{user_id}\n", encoding="utf-8")
    try:
        # link() fails if another process created the file first: then everyone uses that one.
        os.link(tmp, path)
    except FileExistsError:
        return uuid.UUID(path.read_text(encoding="utf-8").strip())
    finally:
        tmp.unlink(missing_ok=True)
    return user_id
