"""Stable shard keys: the same key lands on the same shard in every process and run.

Python's own `hash()` of a string changes per process, so it cannot route across a
Bytewax cluster or between a run and its recovery. A shard is picked by index; its name,
the key Bytewax routes on, comes from `placement`.
"""

from __future__ import annotations

from functools import lru_cache
from zlib import crc32


def shard_index(key: str, shards: int) -> int:
    return crc32(key.encode()) % shards


@lru_cache(maxsize=1024)
def detector_shard(index: int, key: str, shards: int) -> int:
    """The aggregate shard of aggregate detector `index`'s key. Asked for nearly every
    event, mostly of a few keys (gateways, lock families, channels), so remembered. User
    ids are many and each is asked once: a small bound keeps them from costing memory
    per open order (65,536 kept cost 230 bytes an order in test_memory_per_open_order)."""
    return shard_index(f"{index}:{key}", shards)
