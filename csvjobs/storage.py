"""Object storage for uploaded CSVs, templates and generated images: local buckets under $CSVJOBS_HOME/storage."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path

from csvjobs.errors import InputError

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


class LocalStorage:
    """Buckets as directories: {root}/{bucket}/{key}. Storage paths are backend-neutral: "{bucket}/{key}"."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, bucket: str, key: str) -> Path:
        if bucket not in BUCKETS:
            raise ValueError(f"unknown bucket {bucket!r}")
        parts = [part for part in key.split("/") if part]
        if not parts or any(part in (".", "..") or part != safe_filename(part, "") for part in parts):
            raise ValueError(f"unsafe storage key {key!r}")
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


def require_writable(root: Path) -> None:
    """Fail early, with a clear message, when the storage directory cannot be written."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".probe-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"cannot write to the storage directory {root}: {exc.strerror}") from exc
