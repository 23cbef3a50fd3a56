"""Per-key counters in one-minute buckets of event time, summed over a sliding window.

Aggregate detectors evaluate their condition at every minute boundary of event time, over
the window ending there: `callback_failure_rate` over 5 minutes of notify callbacks,
`lock_contention` over 5 minutes of lock acquisitions.
"""

from __future__ import annotations

from collections.abc import Iterator

MINUTE = 60


class SlidingCounts:
    __slots__ = ("_buckets", "_done", "_w", "width")

    def __init__(self, window_s: float, width: int) -> None:
        self._w = max(1, round(window_s / MINUTE))  # window length in buckets
        self.width = width
        self._buckets: dict[str, dict[int, list[float]]] = {}
        self._done: dict[str, int] = {}  # per key: last boundary (minute index) evaluated

    def add(self, key: str, ts: float, values: list[float]) -> None:
        minute = int(ts // MINUTE)
        done = self._done.get(key)
        if done is not None and minute < done - self._w:
            return  # later than any window that can still be evaluated
        buckets = self._buckets.setdefault(key, {})
        bucket = buckets.get(minute)
        if bucket is None:
            buckets[minute] = list(values)
        else:
            for i, v in enumerate(values):
                bucket[i] += v

    def windows(self, now: float) -> Iterator[tuple[str, float, list[float]]]:
        """(key, boundary time, sums over the window ending there) for each new boundary.

        After data stops, one all-zero window is yielded so open alerts can resolve.
        """
        end = int(now // MINUTE)
        w = self._w
        for key in list(self._buckets):
            buckets = self._buckets[key]
            b = self._done.get(key, min(buckets) if buckets else end) + 1
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
