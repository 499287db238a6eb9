"""Choosing a storage backend from the settings, and probing one. The only module that names the backends."""

from __future__ import annotations

import uuid

from csvjobs.config import Settings
from csvjobs.errors import ConfigError
from csvjobs.storage.contract import Storage
from csvjobs.storage.keys import BUCKETS
from csvjobs.storage.local import LocalStorage


def open_storage(settings: Settings) -> Storage:
    """The configured backend: local (default) or s3 (CSVJOBS_STORAGE=s3)."""
    if settings.storage == "local":
        return LocalStorage(settings.storage_root)
    if settings.storage == "s3":
        from csvjobs.storage.s3 import S3Storage

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
