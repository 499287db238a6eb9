"""What csvjobs needs from object storage: the interface every backend implements (local.py, s3.py); registry.py
picks one from the settings."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class Storage(Protocol):
    """What csvjobs needs from object storage."""

    name: str

    def put_file(self, bucket: str, key: str, source: Path) -> str:
        """Store a file; returns its storage path."""
        ...

    def put_bytes(self, bucket: str, key: str, data: bytes) -> str:
        """Store bytes; returns the storage path."""
        ...

    def exists(self, storage_path: str) -> bool:
        """Whether an object exists."""
        ...

    def read_bytes(self, storage_path: str) -> bytes:
        """An object's content."""
        ...

    def delete(self, storage_path: str) -> None:
        """Remove an object if it is there."""
        ...

    def link(self, storage_path: str, expires_seconds: int = 7 * 86400) -> str | None:
        """A time-limited URL to the object for remote backends; None for local storage."""
        ...

    def check(self) -> None:
        """Raise a clear error now if the storage cannot be used (missing bucket, bad credentials)."""
        ...

    def describe(self) -> str:
        """Where the objects go, for status output."""
        ...
