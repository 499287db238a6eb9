"""Settings: one pydantic-settings class, read from CSVJOBS_* environment variables and command-line options."""

from __future__ import annotations

import uuid
from pathlib import Path

import platformdirs
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_home() -> Path:
    """The platform's user data directory for csvjobs."""
    return Path(platformdirs.user_data_dir("csvjobs", appauthor=False))


class Settings(BaseSettings):
    """Everything csvjobs can be configured with; command-line options override these."""

    model_config = SettingsConfigDict(env_prefix="CSVJOBS_", extra="ignore", populate_by_name=True)

    home: Path = Field(default_factory=default_home)
    # A URL may carry a password: SecretStr keeps it out of reprs, logs and error messages.
    database_url: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("CSVJOBS_DATABASE_URL", "DATABASE_URL")
    )
    user_id: uuid.UUID | None = None

    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("CSVJOBS_OPENAI_API_KEY", "OPENAI_API_KEY")
    )
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("CSVJOBS_OPENAI_BASE_URL", "OPENAI_BASE_URL")
    )

    @property
    def pgdata(self) -> Path:
        """Where the embedded PostgreSQL keeps its data."""
        return self.home / "pgdata"

    @property
    def storage_root(self) -> Path:
        """The local storage directory holding the buckets."""
        return self.home / "storage"


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit (non-None) command-line values on top."""
    given = {key: value for key, value in overrides.items() if value is not None}
    return Settings(**given)  # type: ignore[arg-type]
