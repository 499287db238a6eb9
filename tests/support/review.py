"""Running `csvjobs review` as a user does, for the page's tests: the printed URL, once the server listens."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator


def wait_until_listening(url: str) -> None:
    """Wait for uvicorn to listen (asking for the page's shell, which does not spend the launch code)."""
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(url.split("?")[0], timeout=2).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            assert time.monotonic() < deadline, "the review server did not start"
            time.sleep(0.1)


@contextlib.contextmanager
def review_server(env: dict[str, str], batch: str) -> Iterator[str]:
    """`csvjobs review BATCH --no-browser` in a subprocess; yields the launch URL it printed."""
    proc = subprocess.Popen([sys.executable, "-m", "csvjobs", "review", batch, "--no-browser"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line, line + (proc.stderr.read() if proc.stderr else "")
        url = line.split(" at ", 1)[1].split()[0]
        wait_until_listening(url)
        yield url
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
