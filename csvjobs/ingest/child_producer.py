"""Producing bytes in a child process: a large upload is parsed there while the parent feeds the server's COPY.

In one process the parser holds the interpreter lock nearly all the time, so whatever sends the data (the same
thread, or another one waiting for the lock) leaves the server idle in between; measured, the server sat idle
for a fifth of a million-row upload. A child process parses with an interpreter of its own, and the parent only
forwards bytes.

The child is `python -m MODULE ARGS...`, given its input on stdin; it writes frames to stdout: a 12-byte header
(payload length, then a progress position) and the payload; a header with length 0 ends the data, and a JSON
outcome follows. serve() writes that protocol, ChildProducer reads it. A plain subprocess rather than
multiprocessing, so that the child imports only what it needs (multiprocessing's spawn would re-run the parent's
main script, importing the whole CLI first).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import queue
import struct
import subprocess
import sys
import threading
import traceback
from collections.abc import Generator, Iterator
from typing import Any, cast

from csvjobs.errors import CsvJobsError, InputError

_HEADER = struct.Struct(">IQ")  # payload length, progress position
_PIPE_BYTES = 1024 * 1024  # a bigger pipe than Linux's 64 KiB default means fewer stalls on either side
_READ_AHEAD_BYTES = 24 * 1024 * 1024  # read ahead of the server (a chunk of 1,000 rows of 300 bytes is 0.3 MB)

# What a child's producer yields: (chunk, progress position); it returns a JSON-serialisable summary.
Produce = Generator[tuple[bytes, int], None, Any]


class ChildProcessFailed(CsvJobsError):
    """The child process stopped for a reason other than bad input (it was killed, or it crashed)."""

    exit_code = 1


class ChildProducer:
    """Starts `python -m module *args` with stdin_payload; iterate chunks(), then read result(); close() when done."""

    def __init__(self, module: str, args: list[str], stdin_payload: bytes) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0,
        )
        assert self._process.stdin is not None and self._process.stdout is not None
        self._out = cast(io.FileIO, self._process.stdout)  # bufsize=0: the raw pipe, which has readinto
        with contextlib.suppress(AttributeError, OSError):  # Linux only; the default size works, a bit slower
            import fcntl

            fcntl.fcntl(self._out.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        self._process.stdin.write(stdin_payload)
        self._process.stdin.close()
        self.position = 0
        self._finished = False

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self._process.pid

    def chunks(self) -> Iterator[bytes | memoryview]:
        """The chunks in the order the child produced them; each is valid only until the next is asked for.

        A thread reads ahead, up to _READ_AHEAD_BYTES (and one chunk more), into recycled buffers: the child and
        the server take turns being the slower one, and with only the pipe between them each waited for the other
        (measured: the parent spent as long waiting for the child as for the server). Recycled, because allocating
        a buffer a chunk cost more than moving the bytes.
        """
        spare: list[bytearray] = []  # buffers of _PIPE_BYTES to reuse
        held = 0  # bytes in chunks read ahead and not yet done with
        room = threading.Condition()
        stop = threading.Event()
        ready: queue.Queue[tuple[bytearray, int, int] | BaseException | None] = queue.Queue()

        def read_ahead() -> None:
            nonlocal held
            header = bytearray(_HEADER.size)
            try:
                while True:
                    with room:
                        while held >= _READ_AHEAD_BYTES and not stop.is_set():
                            room.wait()
                        if stop.is_set():
                            return
                    self._read_into(memoryview(header))
                    size, position = _HEADER.unpack(header)
                    if not size:
                        ready.put(None)
                        return
                    with room:
                        # a chunk of unusually long rows gets a buffer of its own, used once
                        buffer = spare.pop() if spare and size <= _PIPE_BYTES else bytearray(max(size, _PIPE_BYTES))
                        held += len(buffer)
                    self._read_into(memoryview(buffer)[:size])
                    ready.put((buffer, size, position))
            except BaseException as exc:  # handed to the consumer, which raises it
                ready.put(exc)

        reader = threading.Thread(target=read_ahead, name="csvjobs-read-ahead", daemon=True)
        reader.start()
        try:
            while (item := ready.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                buffer, size, self.position = item
                yield memoryview(buffer)[:size]
                with room:
                    held -= len(buffer)
                    if len(buffer) == _PIPE_BYTES:
                        spare.append(buffer)
                    room.notify()
        finally:
            with room:
                stop.set()
                room.notify()

    def result(self) -> Any:
        """The producer's summary; re-raises its InputError, and raises ChildProcessFailed if it failed so."""
        text = self._out.read()
        self._finished = True
        try:
            outcome = json.loads(text)
        except ValueError:
            raise self._died() from None
        if outcome["kind"] == "input_error":
            raise InputError(outcome["message"])
        if outcome["kind"] == "crash":
            raise ChildProcessFailed(f"the upload's parser process failed (a bug; please report it):\n"
                                     f"{outcome['message']}")
        return outcome["summary"]

    def close(self) -> None:
        """Stop the child if it still runs (the upload failed or was interrupted) and release its pipe."""
        if not self._finished and self._process.poll() is None:
            self._process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=10)
        self._out.close()

    def _read_into(self, view: memoryview) -> None:
        done = 0
        while done < len(view):
            got = self._out.readinto(view[done:])
            if not got:
                raise self._died()
            done += got

    def _died(self) -> ChildProcessFailed:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=10)
        return ChildProcessFailed(
            f"the upload's parser process stopped unexpectedly (exit code {self._process.returncode}); nothing "
            "was uploaded"
        )


def serve(produce: Produce, fd: int = 1) -> int:
    """Child side: write what produce yields as frames to fd, then the outcome; returns the exit code."""
    try:
        while True:
            try:
                chunk, position = next(produce)
            except StopIteration as done:
                outcome: dict[str, Any] = {"kind": "ok", "summary": done.value}
                break
            if chunk:  # a zero length means "no more chunks"
                _write(fd, _HEADER.pack(len(chunk), position) + chunk)
    except InputError as exc:
        outcome = {"kind": "input_error", "message": str(exc)}
    except (BrokenPipeError, KeyboardInterrupt):
        return 1  # the parent stopped reading or was interrupted; it reports that itself
    except Exception:  # anything else is a bug: hand the traceback to the parent, which reports it
        outcome = {"kind": "crash", "message": traceback.format_exc()}
    try:
        _write(fd, _HEADER.pack(0, 0) + json.dumps(outcome).encode())
    except BrokenPipeError:
        return 1
    return 0


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
