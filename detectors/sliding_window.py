"""Per-key counters in one-minute buckets of event time, summed over a sliding window.

Aggregate detectors evaluate their condition at every minute boundary of event time, over
the window ending there: `callback_failure_rate` over 5 minutes of notify callbacks,
`lock_contention` over 5 minutes of lock acquisitions.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

MINUTE = 60


class SlidingCounts:
    __slots__ = ("_buckets", "_done", "_end", "_new", "_w", "width")

    def __init__(self, window_s: float, width: int) -> None:
        self._w = max(1, round(window_s / MINUTE))  # window length in buckets
        self.width = width
        self._buckets: dict[str, dict[int, list[float]]] = {}
        self._done: dict[str, int] = {}  # per key: last boundary (minute index) evaluated
        # `windows` is called for every event: between two boundaries only keys that are
        # new since the last call can have a window to give (every other key is done up to
        # `_end`), so only those are looked at; with thousands of keys (a gateway name per
        # order from a broken feed) going through all of them made each event cost O(keys)
        self._end: int | None = None
        self._new: dict[str, None] = {}  # a set kept in insertion order: alerts come in it

    def __setstate__(self, state: tuple[None, dict]) -> None:
        # a recovery snapshot pickled before `_end` and `_new` existed: all keys are looked at
        self._end, self._new = None, {}
        for name, value in state[1].items():
            setattr(self, name, value)

    def add(self, key: str, ts: float, values: list[float]) -> None:
        minute = int(ts // MINUTE)
        done = self._done.get(key)
        if done is not None and minute < done - self._w:
            return  # later than any window that can still be evaluated
        buckets = self._buckets.get(key)
        if buckets is None:
            buckets = self._buckets[key] = {}
            self._new[key] = None
        bucket = buckets.get(minute)
        if bucket is None:
            buckets[minute] = list(values)
        else:
            for i, v in enumerate(values):
                bucket[i] += v

    def next_due(self) -> float:
        """Before the next minute boundary, `windows` has something only for new keys."""
        if self._new or self._end is None:
            return -math.inf
        return (self._end + 1) * MINUTE

    def windows(self, now: float) -> Iterator[tuple[str, float, list[float]]]:
        """(key, boundary time, sums over the window ending there) for each new boundary.

        After data stops, one all-zero window is yielded so open alerts can resolve.
        """
        end = int(now // MINUTE)
        w = self._w
        keys = list(self._new) if end == self._end else list(self._buckets)
        self._end = end
        self._new.clear()
        for key in keys:
            buckets = self._buckets.get(key)
            if buckets is None:
                continue
            done = self._done.get(key)
            b = (done if done is not None else min(buckets) if buckets else end) + 1
            while b <= end:
                sums = [0.0] * self.width
                seen = False
                for m in range(b - w, b):
                    bucket = buckets.get(m)
                    if bucket is not None:
                        seen = True
                        for i, v in enumerate(bucket):
                            sums[i] += v
                yield key, b * MINUTE, sums
                if seen:
                    b += 1
                    continue
                later = [m for m in buckets if m >= b]
                if not later:
                    break
                b = max(b + 1, min(later) + 1)
            self._done[key] = end
            for m in [m for m in buckets if m < end - w]:
                del buckets[m]
            if not buckets:
                del self._buckets[key]
                del self._done[key]
