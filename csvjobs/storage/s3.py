"""The S3-compatible storage backend (AWS S3, Supabase Storage's S3 endpoint, Cloudflare R2, MinIO), through boto3:
the reference client, whose retry modes and request signing work against all of them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

from csvjobs.config import Settings
from csvjobs.errors import ConfigError, TransientError
from csvjobs.storage.keys import BUCKETS, check_key


class StorageUnavailableError(TransientError):
    """The object store did not answer or answered 5xx after boto3's own retries: worth retrying later."""


class S3Storage:
    """Logical buckets mapped onto S3 buckets (prefix + name) or onto folders of one bucket."""

    name = "s3"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        config = Config(
            retries={"max_attempts": 6, "mode": "standard"},
            s3={"addressing_style": settings.s3_addressing_style},
            connect_timeout=5,
            read_timeout=60,
        )
        self.client = boto3.client(
            "s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.s3_region or "us-east-1",
            config=config,
        )

    def _locate(self, bucket: str, key: str) -> tuple[str, str]:
        check_key(bucket, key)
        if self.settings.s3_bucket:
            return self.settings.s3_bucket, f"{bucket}/{key}"
        return f"{self.settings.s3_bucket_prefix}{bucket}", key

    def _split(self, storage_path: str) -> tuple[str, str]:
        bucket, _, key = storage_path.partition("/")
        return self._locate(bucket, key)

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (EndpointConnectionError, BotoCoreError) as exc:
            raise StorageUnavailableError(f"object storage unavailable while trying to {what}: {exc}") from exc
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if status >= 500 or status == 429:
                raise StorageUnavailableError(f"object storage answered HTTP {status} to {what}") from exc
            raise

    def put_file(self, bucket: str, key: str, source: Path) -> str:
        """Upload a file (multipart for big ones, streamed)."""
        name, object_key = self._locate(bucket, key)
        self._call(f"store {bucket}/{key}", self.client.upload_file, str(source), name, object_key)
        return f"{bucket}/{key}"

    def put_bytes(self, bucket: str, key: str, data: bytes) -> str:
        """Store bytes."""
        name, object_key = self._locate(bucket, key)
        self._call(f"store {bucket}/{key}", self.client.put_object, Bucket=name, Key=object_key, Body=data)
        return f"{bucket}/{key}"

    def exists(self, storage_path: str) -> bool:
        """Whether an object exists."""
        name, key = self._split(storage_path)
        try:
            self._call(f"look up {storage_path}", self.client.head_object, Bucket=name, Key=key)
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return False
            raise
        return True

    def read_bytes(self, storage_path: str) -> bytes:
        """An object's content."""
        name, key = self._split(storage_path)
        response = self._call(f"read {storage_path}", self.client.get_object, Bucket=name, Key=key)
        return bytes(response["Body"].read())

    def delete(self, storage_path: str) -> None:
        """Remove an object (no error if it is not there)."""
        name, key = self._split(storage_path)
        self._call(f"delete {storage_path}", self.client.delete_object, Bucket=name, Key=key)

    def link(self, storage_path: str, expires_seconds: int = 7 * 86400) -> str | None:
        """A presigned GET URL, valid for expires_seconds."""
        name, key = self._split(storage_path)
        return str(self.client.generate_presigned_url(
            "get_object", Params={"Bucket": name, "Key": key}, ExpiresIn=expires_seconds))

    def check(self) -> None:
        """Every bucket exists and the credentials are accepted, or a clear error now."""
        names = [self.settings.s3_bucket] if self.settings.s3_bucket else [
            f"{self.settings.s3_bucket_prefix}{b}" for b in BUCKETS]
        where = self.settings.s3_endpoint_url or "AWS S3"
        for name in names:
            try:
                self.client.head_bucket(Bucket=name)
            except NoCredentialsError as exc:
                raise ConfigError(
                    "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or an AWS profile)"
                ) from exc
            except ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if status == 404:
                    raise ConfigError(f"the S3 bucket {name!r} does not exist at {where}; create it first") from exc
                if status in (401, 403):
                    raise ConfigError(f"the S3 credentials are not accepted for bucket {name!r} at {where}") from exc
                raise ConfigError(f"cannot use the S3 bucket {name!r} at {where}: {exc}") from exc
            except (EndpointConnectionError, BotoCoreError) as exc:
                raise ConfigError(f"cannot reach the S3 endpoint {where}: {exc}") from exc

    def describe(self) -> str:
        """Endpoint and bucket layout."""
        where = self.settings.s3_endpoint_url or "AWS S3"
        layout = (f"bucket {self.settings.s3_bucket} (logical buckets as folders)" if self.settings.s3_bucket
                  else f"buckets {', '.join(self.settings.s3_bucket_prefix + b for b in BUCKETS)}")
        return f"S3 at {where}, {layout}"
