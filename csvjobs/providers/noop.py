"""The noop provider: no work at all (optionally a sleep), for measuring the queue itself."""

from __future__ import annotations

import asyncio

from csvjobs.providers.contract import RowContext, RowOutcome


class NoopProvider:
    """Does no work (optionally sleeping): for measuring the queue itself. Spec: noop or noop:SECONDS."""

    name = "noop"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    async def process(self, ctx: RowContext) -> RowOutcome:
        """Return an empty result after the configured delay."""
        if self.delay:
            await asyncio.sleep(self.delay)
        return RowOutcome(trigger_text=ctx.trigger_text, prompts={}, images=[], tags=[])

    async def aclose(self) -> None:
        """Nothing to release."""
