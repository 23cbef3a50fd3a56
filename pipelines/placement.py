"""Shard names that Bytewax spreads evenly over the workers.

Bytewax routes each key of a stateful step to worker `hash(key) % workers`, where the hash
is Rust's `DefaultHasher` (SipHash-1-3 with zero keys) of the key's string. Sixteen order
shards named "000" to "015" land 9 and 7 on two workers, and the four aggregate shards 3
and 1: the busiest worker bounds a cluster's speed. So on a cluster a shard whose plain
name lands on the wrong worker gets a suffix ("003-2") that lands it on the right one.

Order shards go round-robin over the workers; aggregate shards round-robin over all but
worker 0, from the last, because worker 0 (the leader's first) also writes ClickHouse and
sends the alerts (benchmarks/README.md, round 12, measures both).
With one worker every name lands on it, and the names are the plain ones.
`tests/test_placement.py` checks these names against a real Bytewax cluster.
"""

from __future__ import annotations

from functools import lru_cache

_MASK = (1 << 64) - 1


def _rotl(x: int, bits: int) -> int:
    return ((x << bits) | (x >> (64 - bits))) & _MASK


def siphash13(data: bytes) -> int:
    """SipHash-1-3 with keys (0, 0): Rust's `DefaultHasher::default()`."""
    v0, v1, v2, v3 = 0x736F6D6570736575, 0x646F72616E646F6D, 0x6C7967656E657261, 0x7465646279746573

    def round_(v0: int, v1: int, v2: int, v3: int) -> tuple[int, int, int, int]:
        v0 = (v0 + v1) & _MASK
        v1 = _rotl(v1, 13) ^ v0
        v0 = _rotl(v0, 32)
        v2 = (v2 + v3) & _MASK
        v3 = _rotl(v3, 16) ^ v2
        v0 = (v0 + v3) & _MASK
        v3 = _rotl(v3, 21) ^ v0
        v2 = (v2 + v1) & _MASK
        v1 = _rotl(v1, 17) ^ v2
        v2 = _rotl(v2, 32)
        return v0, v1, v2, v3

    whole = len(data) - len(data) % 8
    for i in range(0, whole, 8):
        m = int.from_bytes(data[i:i + 8], "little")
        v3 ^= m
        v0, v1, v2, v3 = round_(v0, v1, v2, v3)
        v0 ^= m
    last = ((len(data) & 0xFF) << 56) | int.from_bytes(data[whole:], "little")
    v3 ^= last
    v0, v1, v2, v3 = round_(v0, v1, v2, v3)
    v0 ^= last
    v2 ^= 0xFF
    for _ in range(3):
        v0, v1, v2, v3 = round_(v0, v1, v2, v3)
    return v0 ^ v1 ^ v2 ^ v3


def bytewax_worker(key: str, workers: int) -> int:
    """The worker of a stateful step's key: a Rust `str` hashes its bytes, then 0xFF."""
    return siphash13(key.encode() + b"\xff") % workers


@lru_cache(maxsize=64)
def _placed(shards: int, targets: tuple[int, ...], workers: int) -> tuple[str, ...]:
    """Names that put shard i on worker targets[i % len(targets)] of `workers`."""
    names = []
    for i in range(shards):
        target = targets[i % len(targets)]
        name, salt = f"{i:03d}", 0
        while bytewax_worker(name, workers) != target:
            salt += 1
            name = f"{i:03d}-{salt}"
        names.append(name)
    return tuple(names)


def order_shard_names(shards: int, workers: int = 1) -> list[str]:
    workers = max(1, workers)
    return list(_placed(shards, tuple(range(workers)), workers))


def aggregate_shard_names(shards: int, workers: int = 1) -> list[str]:
    workers = max(1, workers)
    return list(_placed(shards, tuple(range(workers - 1, 0, -1)) or (0,), workers))
