"""Shop round trips: upload a file, work it off, and read an export back."""

from __future__ import annotations

import csv
import io
import json
import uuid
from pathlib import Path

from support.helpers import cli
from support.pool import finish, start_pool

BASE = "https://cdn.example.test/shop-images"


def upload_and_work(env: dict[str, str], path: Path, *args: str) -> uuid.UUID:
    result = cli(env, "upload", str(path), "--json", *args)
    assert result.returncode == 0, result.stderr
    code, err = finish(start_pool(env, "--until-done", "--max-dedicated", "0", "--concurrency", "4"), timeout=180)
    assert code == 0, err
    return uuid.UUID(json.loads(result.stdout)["batch_id"])


def parse(text: str) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text))
    return list(reader.fieldnames or []), list(reader)
