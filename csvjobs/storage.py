"""Object storage for uploaded CSVs, templates and generated images. Two backends behind one interface: local
directories under $CSVJOBS_HOME/storage (the default) and any S3-compatible service (s3_storage.py). Storage
paths in the database are backend-neutral: "{bucket}/{key}", e.g. csv-images/{user_id}/{batch_id}/3-...png."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Protocol

from csvjobs.config import Settings
from csvjobs.errors import ConfigError, InputError

UPLOADS_BUCKET = "csv-uploads"
TEMPLATES_BUCKET = "csv-templates"
IMAGES_BUCKET = "csv-images"
BUCKETS = (UPLOADS_BUCKET, TEMPLATES_BUCKET, IMAGES_BUCKET)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(name: str, default: str = "upload.csv") -> str:
    """A file name that cannot leave its folder: no separators, no leading dots, printable ASCII, bounded length."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _UNSAFE.sub("_", base).strip("._")[:120]
    return cleaned or default


def check_key(bucket: str, key: str) -> list[str]:
    """The key's parts, after refusing unknown buckets and anything that could escape a folder."""
    if bucket not in BUCKETS:
        raise ValueError(f"unknown bucket {bucket!r}")
    parts = [part for part in key.split("/") if part]
    if not parts or any(part in (".", "..") or part != safe_filename(part, "") for part in parts):
        raise ValueError(f"unsafe storage key {key!r}")
    return parts


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
        try:
            with os.fdopen(fd, "wb") as out, source.open("rb") as src:
                shutil.copyfileobj(src, out, 1024 * 1024)
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


def open_storage(settings: Settings) -> Storage:
    """The configured backend: local (default) or s3 (CSVJOBS_STORAGE=s3)."""
    if settings.storage == "local":
        return LocalStorage(settings.storage_root)
    if settings.storage == "s3":
        from csvjobs.s3_storage import S3Storage

        return S3Storage(settings)
    raise ConfigError(f"CSVJOBS_STORAGE={settings.storage!r}: use local or s3")


def probe_storage(storage: Storage) -> list[tuple[str, str]]:
    """Write, read and delete a probe object in every bucket; (bucket, "ok" or what failed)."""
    results = []
    for bucket in BUCKETS:
        key = f"csvjobs-probe/{uuid.uuid4().hex}.txt"
        payload = f"csvjobs storage probe {uuid.uuid4()}".encode()
        try:
            path = storage.put_bytes(bucket, key, payload)
            if storage.read_bytes(path) != payload:
                results.append((bucket, "read back different bytes"))
                continue
            storage.delete(path)
            results.append((bucket, "ok" if not storage.exists(path) else "delete did not remove the object"))
        except Exception as exc:  # report every failure per bucket rather than stop at the first
            results.append((bucket, f"failed: {str(exc).splitlines()[0][:200]}"))
    return results
