"""Photos named by an upload's rows. A URL is left for the workers to fetch (they check it then); a path is a file
beside the CSV that the upload stores with the batch, because workers on other machines cannot read the
uploader's disk. Such a path must stay inside the CSV's folder (a CSV from someone else must not make the upload
store, say, ~/.ssh/id_rsa where workers and the gallery can read it), name no hidden file or folder, be a file of
one link (a hard link can make a file from elsewhere look as if it were inside), within the size cap, and hold an
image in an accepted format (IMAGE_FORMATS): nothing else is stored."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

from PIL import Image

from csvjobs.models import IMAGE_FORMATS
from csvjobs.redact import redact
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
            return (f"photo {redact(value[:200])!r} is neither an http(s) URL nor a path to a file beside the CSV; "
                    "give a URL, or a path relative to the CSV file such as images/mug.jpg")
        relative = value.replace("\\", "/")
        if any(part.startswith(".") and part not in (".", "..") for part in relative.split("/")):
            return (f"photo {value[:200]!r} names a hidden file or folder; photos are never read from hidden "
                    "paths (such as .ssh): move the photo to a visible folder beside the CSV")
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root):
            return (f"photo {value[:200]!r} is outside the CSV file's folder ({self.root}); put the photos in that "
                    "folder (or a folder inside it) and name them relative to the CSV")
        if not path.is_file():
            return f"photo {value[:200]!r}: no such file (looked for {path})"
        if any(part.startswith(".") for part in path.relative_to(self.root).parts):
            return (f"photo {value[:200]!r} leads to a hidden file or folder; photos are never read from hidden "
                    "paths: move the photo to a visible folder beside the CSV")
        stat = path.stat()
        if stat.st_nlink > 1:
            return (f"photo {value[:200]!r} is a file with {stat.st_nlink} hard links, which could make a file from "
                    "outside the folder look as if it were inside; copy the photo there instead of linking it")
        if stat.st_size > self.max_bytes:
            return f"photo {value[:200]!r} is {stat.st_size:,} bytes, over the {self.max_bytes:,}-byte limit"
        if not _is_accepted_image(path):
            return (f"photo {value[:200]!r} is not an image in an accepted format ({', '.join(IMAGE_FORMATS)}); "
                    "save it as JPEG or PNG")
        self.files[value] = str(path)
        return None


def _is_accepted_image(path: Path) -> bool:
    """Whether the file is an image in an accepted format: its header is read and its structure checked (verify)
    without decoding the pixels, so a large photo costs no memory here."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path, formats=IMAGE_FORMATS) as image:
                image.verify()
    except Exception:  # any decoder complaint: not an image we store
        return False
    return True
