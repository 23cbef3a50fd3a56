"""Release events in event-time order once the watermark has passed them.

Events of one order arrive out of order and late (minutes, across streams). Buffering
them until event time has surely passed and then applying them sorted by
(occurred_at, event_id) means every detector sees one deterministic history. So order
state "as of time t", a risk score at time t, or which of two requests came first do
not depend on how partitions, files or batches interleaved. An event that arrives after
the watermark passed it is late beyond the allowed lateness. It is released at once and
counted.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from orderwatch.events import Event

T = TypeVar("T")


class ReorderBuffer(Generic[T]):
    """Items keyed by (event time, tie-break); the tie-break makes equal times deterministic."""

    __slots__ = ("_heap", "_seq", "late", "released_to")

    def __init__(self) -> None:
        self._heap: list[tuple[float, Any, int, T]] = []
        self._seq = itertools.count()  # redeliveries tie on everything else
        self.released_to = -float("inf")
        self.late = 0

    def push(self, ts: float, tiebreak: Any, item: T) -> bool:
        """Buffer an item; returns False when it is already late (handle it yourself)."""
        if ts < self.released_to:
            self.late += 1
            return False
        heapq.heappush(self._heap, (ts, tiebreak, next(self._seq), item))
        return True

    def push_event(self, event: Event) -> bool:
        return self.push(event.ts, event.event_id, event)  # type: ignore[arg-type]

    def release(self, watermark: float) -> Iterator[T]:
        """Items with event time ≤ watermark, oldest first."""
        heap = self._heap
        while heap and heap[0][0] <= watermark:
            yield heapq.heappop(heap)[3]
        if watermark > self.released_to:
            self.released_to = watermark

    def release_timed(self, watermark: float) -> Iterator[tuple[float, T]]:
        """As `release`, with each item's event time."""
        heap = self._heap
        while heap and heap[0][0] <= watermark:
            entry = heapq.heappop(heap)
            yield entry[0], entry[3]
        if watermark > self.released_to:
            self.released_to = watermark

    def __len__(self) -> int:
        return len(self._heap)
