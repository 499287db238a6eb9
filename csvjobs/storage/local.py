"""Local storage: buckets as directories under $CSVJOBS_HOME/storage (the default backend)."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

from csvjobs.errors import InputError
from csvjobs.storage.keys import check_key


class LocalStorage:
    """Buckets as directories: {root}/{bucket}/{key}."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, bucket: str, key: str) -> Path:
        parts = check_key(bucket, key)
        path = (self.root / bucket).joinpath(*parts)
        if not path.resolve().is_relative_to((self.root / bucket).resolve()):
            raise ValueError(f"storage key {key!r} escapes its bucket")
        return path

    def path_of(self, storage_path: str) -> Path:
        """The local file behind a "{bucket}/{key}" storage path."""
        bucket, _, key = storage_path.partition("/")
        return self._path(bucket, key)

    def put_file(self, bucket: str, key: str, source: Path) -> str:
        """Copy a file in (streamed, then renamed into place so readers never see half a file)."""
        target = self._path(bucket, key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
        os.close(fd)
        try:
            # copyfile copies in the kernel (sendfile on Linux): an upload waits for this copy before its COPY starts
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return f"{bucket}/{key}"

    def put_bytes(self, bucket: str, key: str, data: bytes) -> str:
        """Store bytes atomically and return the storage path."""
        target = self._path(bucket, key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return f"{bucket}/{key}"

    def exists(self, storage_path: str) -> bool:
        """Whether an object exists."""
        return self.path_of(storage_path).is_file()

    def read_bytes(self, storage_path: str) -> bytes:
        """An object's content."""
        return self.path_of(storage_path).read_bytes()

    def delete(self, storage_path: str) -> None:
        """Remove an object if it is there."""
        self.path_of(storage_path).unlink(missing_ok=True)

    def link(self, storage_path: str, expires_seconds: int = 7 * 86400) -> str | None:
        """Local files have no URL to share."""
        return None

    def check(self) -> None:
        """Fail early, with a clear message, when the storage directory cannot be written."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise InputError(f"cannot write to the storage directory {self.root}: {exc.strerror}") from exc

    def describe(self) -> str:
        """The storage directory."""
        return f"local directory {self.root}"
