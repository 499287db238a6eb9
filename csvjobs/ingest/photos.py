"""Photos named by an upload's rows. A URL is left for the workers to fetch (they check it then); a path is a file
beside the CSV that the upload stores with the batch, because workers on other machines cannot read the
uploader's disk. Such a path must stay inside the CSV's folder (a CSV from someone else must not make the upload
store, say, ~/.ssh/id_rsa where workers and the gallery can read it) and name a file within the size cap."""

from __future__ import annotations

import re
from pathlib import Path

from csvjobs.storage.keys import is_remote_photo

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


class LocalPhotos:
    """Checks each row's photo value and collects the local files to store with the batch."""

    def __init__(self, csv_path: Path, max_bytes: int) -> None:
        self.root = csv_path.resolve().parent
        self.max_bytes = max_bytes
        self.files: dict[str, str] = {}  # the value as the CSV writes it -> the file's absolute path
        self._checked: dict[str, str | None] = {}

    def check(self, value: str) -> str | None:
        """None when the value is usable (a URL, or a file that was found), else what is wrong with it."""
        if is_remote_photo(value):
            return None
        if value in self._checked:
            return self._checked[value]
        problem = self._check_file(value)
        self._checked[value] = problem
        return problem

    def _check_file(self, value: str) -> str | None:
        if _SCHEME.match(value) and not re.match(r"^[A-Za-z]:[\\/]", value):
            return (f"photo {value[:200]!r} is neither an http(s) URL nor a path to a file beside the CSV; give a "
                    "URL, or a path relative to the CSV file such as images/mug.jpg")
        relative = value.replace("\\", "/")
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root):
            return (f"photo {value[:200]!r} is outside the CSV file's folder ({self.root}); put the photos in that "
                    "folder (or a folder inside it) and name them relative to the CSV")
        if not path.is_file():
            return f"photo {value[:200]!r}: no such file (looked for {path})"
        size = path.stat().st_size
        if size > self.max_bytes:
            return f"photo {value[:200]!r} is {size:,} bytes, over the {self.max_bytes:,}-byte limit"
        self.files[value] = str(path)
        return None
