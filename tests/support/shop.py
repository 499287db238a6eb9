"""Shop round trips: upload a file, work it off, and read an export back."""

from __future__ import annotations

import csv
import io
import uuid
from pathlib import Path

from support.helpers import upload
from support.pool import finish, start_pool

BASE = "https://cdn.example.test/shop-images"


def upload_and_work(env: dict[str, str], path: Path, *args: str) -> uuid.UUID:
    report = upload(env, path, *args)
    code, err = finish(start_pool(env, "--until-done", "--max-dedicated", "0", "--concurrency", "4"), timeout=180)
    assert code == 0, err
    return uuid.UUID(report["batch_id"])


def parse(text: str) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text))
    return list(reader.fieldnames or []), list(reader)
