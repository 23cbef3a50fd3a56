"""Event-time watermarks: how far event time has surely advanced.

Each input partition (a file, a Kafka partition, the engine) reports the latest event
time it has read. The watermark is the slowest partition's time minus the allowed
lateness, so a fast stream cannot fire another stream's timeouts early. A partition at
end of input no longer holds it back; when all have ended, the watermark is the latest
event time of the whole input: every timeout due by then fires, none later.
"""

from __future__ import annotations

NEVER = -float("inf")
# A source that drains sends its last input and then DRAIN_STEPS - 1 empty ones, counting
# down `draining`: the end of input releases the last allowed lateness in that many steps
# rather than at once (all those events' rows at once cost ~10 KB each, issue #8).
DRAIN_STEPS = 8


class WatermarkTracker:
    __slots__ = ("_draining", "_idle", "_latest", "expected", "lateness")

    def __init__(self, lateness_s: float, expected_partitions: int = 1) -> None:
        self.lateness = lateness_s
        self.expected = expected_partitions
        self._latest: dict[str, float] = {}
        self._idle: set[str] = set()
        # the partitions that ended → how many empty inputs each will still send
        self._draining: dict[str, int] = {}

    def observe(self, partition: str, max_ts: float, ended: bool, partitions: int,
                idle: bool = False, draining: int = 0) -> None:
        """`idle`: the partition is caught up (tailing Kafka) and must not hold event time
        back until it delivers again. `draining`: an ended partition will send this many
        more empty inputs, over which the watermark crosses the last allowed lateness."""
        self.expected = max(self.expected, partitions)
        if max_ts > self._latest.get(partition, NEVER):
            self._latest[partition] = max_ts
        elif partition not in self._latest:
            self._latest[partition] = NEVER
        if ended:
            self._draining[partition] = draining
        elif partition in self._draining:  # resumed, and the file had grown since
            del self._draining[partition]
        if idle and max_ts == NEVER:
            self._idle.add(partition)
        else:
            self._idle.discard(partition)

    def __setstate__(self, state: tuple[None, dict]) -> None:
        """Snapshots taken before draining keep the ended partitions as a set, `_ended`:
        none of them is draining."""
        slots = dict(state[1])
        if "_ended" in slots:
            slots["_draining"] = dict.fromkeys(slots.pop("_ended"), 0)
        for name, value in slots.items():
            setattr(self, name, value)

    @property
    def all_ended(self) -> bool:
        return len(self._draining) >= self.expected

    @property
    def finished(self) -> bool:
        """Every partition has ended and drained: no event time will ever come."""
        return self.all_ended and not any(self._draining.values())

    def watermark(self) -> float:
        if not self._latest:
            return NEVER
        if self.all_ended:
            left = max(self._draining.values(), default=0)
            return max(self._latest.values()) - self.lateness * left / DRAIN_STEPS
        if len(self._latest) < self.expected:
            return NEVER
        live = [ts for p, ts in self._latest.items()
                if p not in self._draining and p not in self._idle]
        if not live:  # every partition caught up: nothing older can still arrive
            live = [max(self._latest.values())]
        return min(live) - self.lateness


class MinOfUpstreams:
    """Watermark of a stage fed by several upstream shards: the slowest of them."""

    __slots__ = ("_finished", "_marks", "expected")

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self._marks: dict[str, float] = {}
        self._finished: set[str] = set()

    def __setstate__(self, state: tuple[None, dict]) -> None:
        """Snapshots taken before `_finished` existed: no upstream had finished."""
        self._finished = set()
        for name, value in state[1].items():
            setattr(self, name, value)

    def observe(self, upstream: str, mark: float, finished: bool = False) -> None:
        if mark > self._marks.get(upstream, NEVER):
            self._marks[upstream] = mark
        if finished:
            self._finished.add(upstream)
        else:  # it was resumed on input that had grown since
            self._finished.discard(upstream)

    @property
    def finished(self) -> bool:
        """Every upstream has seen the end of all input."""
        return len(self._finished) >= self.expected

    def watermark(self) -> float:
        if len(self._marks) < self.expected:
            return NEVER
        return min(self._marks.values())
