"""Pixel work a bounded number at a time in each process. An image being finished holds its decoded pixels (a
2048 px image is 16 MB as RGBA, and the cut-out's arrays several times that), so a worker finishing every row's
images at once held them all (600+ MB a worker); and on a few cores more work at once only waits longer."""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import Callable
from typing import ParamSpec, TypeVar

# At most this many images are decoded and worked on at once in a process (its threads share the cores).
PIXEL_WORK_SLOTS = max(2, min(4, os.cpu_count() or 1))

_P = ParamSpec("_P")
_T = TypeVar("_T")
# One semaphore per event loop (a process may run several loops in turn, as the tests do).
_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


async def run_pixel_work(func: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """func(*args, **kwargs) in a thread, once one of the process's pixel-work slots is free."""
    loop = asyncio.get_running_loop()
    slots = _slots.get(loop)
    if slots is None:
        slots = _slots[loop] = asyncio.Semaphore(PIXEL_WORK_SLOTS)
    async with slots:
        return await asyncio.to_thread(func, *args, **kwargs)
