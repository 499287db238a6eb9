"""A provider written against the old import path (csvjobs.pipeline), loaded as --provider legacy_provider:make."""

from __future__ import annotations

from typing import Any

from csvjobs.pipeline import NoopProvider, RowContext, RowOutcome


class Legacy(NoopProvider):
    name = "legacy"

    async def process(self, ctx: RowContext) -> RowOutcome:
        outcome = await super().process(ctx)
        return outcome.model_copy(update={"tags": ["legacy"]})


def make(settings: Any) -> Legacy:
    return Legacy()
