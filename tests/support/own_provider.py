"""A provider of the user's own, written against the contract and loaded as --provider support.own_provider:make."""

from __future__ import annotations

from typing import Any

from csvjobs.providers.contract import RowContext, RowOutcome
from csvjobs.providers.noop import NoopProvider


class Own(NoopProvider):
    name = "own"

    async def process(self, ctx: RowContext) -> RowOutcome:
        outcome = await super().process(ctx)
        return outcome.model_copy(update={"tags": ["own"]})


def make(settings: Any) -> Own:
    return Own()
