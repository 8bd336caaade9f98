"""Reading what reached a topic, for assertions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from shared.events import Envelope, decode


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
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    kept: list[ConsumerRecord] = []
    try:
        async with asyncio.timeout(timeout):
            while not done(kept):
                batches = await consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    kept += [record for record in records if keep(record)]
    except TimeoutError:
        pass
    finally:
        await consumer.stop()
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
    return [decode(record.value) for record in records]
