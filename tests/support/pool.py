"""Running `csvjobs work` as a user does: a subprocess pool, and waiting for it (or for anything) with a deadline."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable


def start_pool(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "csvjobs", "work", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str]:
    try:
        _out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _out, err = proc.communicate()
        raise AssertionError(f"the pool did not finish in {timeout}s:\n{err}") from None
    return proc.returncode, err


def wait_for(predicate: Callable[[], object], timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def work(env: dict[str, str], *args: str, timeout: float = 240, dedicated: bool = False) -> str:
    """`csvjobs work --until-done ARGS` as a user runs it (without dedicated workers unless asked), once it has
    exited 0; what it printed on stderr (its workers' lines and the bill)."""
    code, err = finish(start_pool(env, "--until-done", *(() if dedicated else ("--max-dedicated", "0")), *args),
                       timeout=timeout)
    assert code == 0, err
    return err
