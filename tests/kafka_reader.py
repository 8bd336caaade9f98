"""Reading what reached a topic, for assertions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from aiokafka import ConsumerRecord

from shared.events import Envelope, decode
from shared.kafka import read_from_start


async def read_until(
    bootstrap: str,
    topic: str,
    done: Callable[[list[ConsumerRecord]], bool],
    *,
    keep: Callable[[ConsumerRecord], bool] = lambda record: True,
    timeout: float = 15.0,
) -> list[ConsumerRecord]:
    """Records of ``topic`` from the start that ``keep`` accepts, read until
    ``done`` says enough or ``timeout`` seconds pass (then returns what it has)."""
    kept: list[ConsumerRecord] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            async for records in read_from_start(bootstrap, topic, idle_ms=200):
                kept += [record for record in records if keep(record)]
                if done(kept):
                    break
    return kept


async def events_about(
    bootstrap: str, subjects: set[str], *, count: int, timeout: float = 15.0
) -> list[Envelope]:
    """The first ``count`` lead-events whose subject is in ``subjects``."""
    records = await read_until(
        bootstrap,
        "lead-events",
        lambda kept: len(kept) >= count,
        keep=lambda record: record.key is not None and record.key.decode() in subjects,
        timeout=timeout,
    )
    # A fetch can bring more than were asked for (the lead's next event).
    return [decode(record.value) for record in records[:count]]
