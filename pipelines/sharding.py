"""Stable shard keys: the same key lands on the same shard in every process and run.

Python's own `hash()` of a string changes per process, so it cannot route across a
Bytewax cluster or between a run and its recovery.
"""

from __future__ import annotations

from zlib import crc32


def shard_of(key: str, shards: int) -> str:
    return f"{crc32(key.encode()) % shards:03d}"


def all_shards(shards: int) -> list[str]:
    return [f"{i:03d}" for i in range(shards)]
