"""Stable shard keys: the same key lands on the same shard in every process and run.

Python's own `hash()` of a string changes per process, so it cannot route across a
Bytewax cluster or between a run and its recovery.
"""

from __future__ import annotations

from functools import lru_cache
from zlib import crc32


def shard_of(key: str, shards: int) -> str:
    return f"{crc32(key.encode()) % shards:03d}"


@lru_cache(maxsize=1024)
def detector_shard(index: int, key: str, shards: int) -> str:
    """The aggregate shard of aggregate detector `index`'s key. Asked for nearly every
    event, mostly of a few keys (gateways, lock families, channels), so remembered. User
    ids are many and each is asked once: a small bound keeps them from costing memory
    per open order (65,536 kept cost 230 bytes an order in test_memory_per_open_order)."""
    return shard_of(f"{index}:{key}", shards)


def all_shards(shards: int) -> list[str]:
    return [f"{i:03d}" for i in range(shards)]
