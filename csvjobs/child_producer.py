"""Producing bytes in a child process: a large upload is parsed there while the parent feeds the server's COPY.

In one process the parser holds the interpreter lock nearly all the time, so whatever sends the data (the same
thread, or another one waiting for the lock) leaves the server idle in between; measured, the server sat idle
for a fifth of a million-row upload. A child process parses with an interpreter of its own, and the parent only
forwards bytes.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import traceback
from collections.abc import Callable, Generator, Iterator
from typing import Any

from csvjobs.errors import CsvJobsError, InputError

_PIPE_BYTES = 1024 * 1024  # a bigger pipe than Linux's 64 KiB default means fewer stalls on either side

# target(*args, position) yields chunks of bytes and returns a picklable summary; position is a shared counter.
Target = Callable[..., Generator[bytes, None, Any]]


class ChildProcessFailed(CsvJobsError):
    """The child process stopped for a reason other than bad input (it was killed, or it crashed)."""

    exit_code = 1


class ChildProducer:
    """Runs a generator function in a spawned process; iterate chunks(), then read result(); close() when done."""

    def __init__(self, target: Target, args: tuple[Any, ...]) -> None:
        # spawn, not fork: this process may hold a database connection and threads that a fork would copy.
        context = multiprocessing.get_context("spawn")
        self._receive, send = context.Pipe(duplex=False)
        with contextlib.suppress(AttributeError, OSError):  # Linux only; the default size works, a bit slower
            import fcntl

            fcntl.fcntl(send.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        self.position = context.Value("q", 0, lock=False)
        self._process = context.Process(target=_run, args=(target, args, send, self.position), daemon=True,
                                        name="csvjobs-parser")
        self._process.start()
        send.close()
        self._finished = False

    def chunks(self) -> Iterator[bytes | memoryview]:
        """The chunks in the order the child produced them; each is valid only until the next is asked for."""
        # One buffer for every chunk: allocating a fresh one for each cost more than moving the bytes.
        buffer = bytearray(_PIPE_BYTES)
        while True:
            try:
                size = self._receive.recv_bytes_into(buffer)
            except multiprocessing.BufferTooShort as longer:
                yield longer.args[0]  # a chunk of unusually long rows
                continue
            except EOFError:
                raise self._died() from None
            if not size:
                return
            yield memoryview(buffer)[:size]

    def result(self) -> Any:
        """The target's return value; re-raises its InputError, and raises ChildProcessFailed if it failed so."""
        try:
            kind, payload = self._receive.recv()
        except EOFError:
            raise self._died() from None
        self._finished = True
        if kind == "input_error":
            raise InputError(payload)
        if kind == "crash":
            raise ChildProcessFailed(f"the upload's parser process failed (a bug; please report it):\n{payload}")
        return payload

    def close(self) -> None:
        """Stop the child if it still runs (the upload failed or was interrupted) and release the pipe."""
        if not self._finished and self._process.is_alive():
            self._process.terminate()
        self._process.join(timeout=10)
        self._receive.close()

    def _died(self) -> ChildProcessFailed:
        self._process.join(timeout=10)
        return ChildProcessFailed(
            f"the upload's parser process stopped unexpectedly (exit code {self._process.exitcode}); nothing was "
            "uploaded"
        )


def _run(target: Target, args: tuple[Any, ...], send: multiprocessing.connection.Connection, position: Any) -> None:
    try:
        produce = target(*args, position)
        while True:
            try:
                chunk = next(produce)
            except StopIteration as done:
                summary = done.value
                break
            if chunk:  # an empty message means "no more chunks"
                send.send_bytes(chunk)
        send.send_bytes(b"")
        send.send(("ok", summary))
    except InputError as exc:
        send.send_bytes(b"")
        send.send(("input_error", str(exc)))
    except (BrokenPipeError, KeyboardInterrupt):
        pass  # the parent stopped reading or was interrupted; it reports that itself
    except BaseException:  # anything else is a bug: hand the traceback to the parent, which reports it
        with contextlib.suppress(OSError):
            send.send_bytes(b"")
            send.send(("crash", traceback.format_exc()))
    finally:
        send.close()
