"""Bytewax sources: recorded JSON Lines files (replay) and the reference engine (live).

Both emit `Chunk`s, a batch of raw records per call, so Bytewax's per-item cost is paid
once per batch rather than once per event.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from orderwatch.engine.simulator import SimConfig, Simulator
from orderwatch.pipelines.decoding import Chunk
from orderwatch.pipelines.watermark import DRAIN_STEPS

UTF8_BOM = b"\xef\xbb\xbf"


class Drain:
    """The end of a partition: its last chunk and the DRAIN_STEPS - 1 empty ones after it
    count `draining` down, and the watermark crosses the last allowed lateness a step per
    chunk rather than at once (watermark.py)."""

    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = DRAIN_STEPS - 1

    def draining(self, ended: bool) -> int:
        """`draining` for a chunk with input: the steps left if it is the last, else 0."""
        return self.left if ended else 0

    def next_step(self) -> int:
        """`draining` for the next empty chunk; StopIteration once the last has gone."""
        if not self.left:
            raise StopIteration
        self.left -= 1
        return self.left


class _JsonlPartition(StatefulSourcePartition[Chunk, tuple[int, int]]):
    """One stripe of a file: blocks of `batch_size` lines, stripe k of n taking blocks k,
    k+n, k+2n… Every stripe reads the whole file (splitting lines is cheap) and decodes
    only its own blocks, so n workers decode in parallel and move through event time
    together; line numbers stay the file's. After the last line come DRAIN_STEPS - 1
    empty chunks, over which the end of input is released in steps (watermark.py)."""

    def __init__(self, path: str, batch_size: int, parts: int,
                 resume: tuple[int, int] | None, stripe: int = 0, stripes: int = 1,
                 max_ahead_s: float = math.inf) -> None:
        self.path = path
        self.max_ahead_s = max_ahead_s
        self.name = stripe_name(path, stripe, stripes)
        self.batch_size = batch_size
        self.parts = parts
        self.stripe = stripe
        self.stripes = stripes
        self.file = open(path, "rb")  # noqa: SIM115 - closed by close()
        self.line_no = 0
        if resume is not None:
            offset, self.line_no = resume
            self.file.seek(offset)
        elif self.file.read(len(UTF8_BOM)) != UTF8_BOM:  # Notepad saves "UTF-8" with one
            self.file.seek(0)
        self.done = False
        self.drain = Drain()

    def next_batch(self) -> list[Chunk]:
        if self.done:
            self.drain.next_step()
            return [self._chunk(self.line_no + 1, [])]
        readline = self.file.readline
        while (self.line_no // self.batch_size) % self.stripes != self.stripe:
            if not readline():  # in another stripe's block: skip it
                self.done = True
                return [self._chunk(self.line_no + 1, [])]
            self.line_no += 1
        first = self.line_no + 1
        records = []
        while len(records) < self.batch_size:
            line = readline()
            if not line:
                self.done = True
                break
            self.line_no += 1
            records.append(line.strip())  # blank lines stay, so positions are line numbers
        return [self._chunk(first, records)]

    def _chunk(self, first: int, records: list[bytes]) -> Chunk:
        return Chunk(self.name, first, records, self.done, self.parts, source=self.path,
                     draining=self.drain.draining(self.done), max_ahead_s=self.max_ahead_s,
                     own_time=True)

    def snapshot(self) -> tuple[int, int]:
        return (self.file.tell(), self.line_no)

    def close(self) -> None:
        self.file.close()


def stripe_name(path: str, stripe: int, stripes: int) -> str:
    return path if stripes == 1 else f"{path}#{stripe + 1}/{stripes}"


class JsonlSource(FixedPartitionedSource[Chunk, tuple[int, int]]):
    """One partition per file, or `stripes` per file so that several workers decode it;
    the three streams may be in one file or split over several."""

    def __init__(self, paths: list[str], batch_size: int = 2000, stripes: int = 1,
                 max_ahead_s: float = 0) -> None:
        """`max_ahead_s`: how far an event may be ahead of the wall clock and past the
        other event times of its chunk (0: no bound; `decoding.reach`)."""
        self.paths = list(paths)
        self.max_ahead_s = max_ahead_s or math.inf
        self.batch_size = batch_size
        self.stripes = stripes
        self._parts = {stripe_name(path, k, stripes): (path, k)
                       for path in self.paths for k in range(stripes)}

    def list_parts(self) -> list[str]:
        return list(self._parts)

    def build_part(self, step_id: str, for_part: str,
                   resume_state: tuple[int, int] | None) -> _JsonlPartition:
        path, stripe = self._parts[for_part]
        return _JsonlPartition(path, self.batch_size, len(self._parts), resume_state,
                               stripe, self.stripes, self.max_ahead_s)


class StopSignal:
    """Set by Ctrl-C or SIGTERM (or a duration) to end a live source gracefully."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def set_by_peer(self) -> None:
        """Another process of the cluster was told to stop: its last chunk reached a
        shard here. A cluster ends only when every partition has, so without this the
        stopped process would wait for the others' partitions, which never end."""
        with self._lock:  # several shards may see it at once
            if self._event.is_set():
                return
            self._event.set()
        print("\nstopping: another process of the cluster is stopping; writing results, "
              "event time stays where it was for a resume", file=sys.stderr, flush=True)


class _EnginePartition(StatefulSourcePartition[Chunk, int]):
    TICK = timedelta(milliseconds=100)
    # a warm-up runs in slices of this much work per call, never blocking the dataflow
    # for long: Bytewax left a worker parked for minutes after a build_part that took
    # half an hour
    WARM_SLICE_S = 0.2

    def __init__(self, config: SimConfig, rate: float, duration: float | None,
                 stop: StopSignal, resume: int | None, max_batch: int,
                 max_ahead_s: float = math.inf) -> None:
        self.sim = Simulator(config)
        self.max_ahead_s = max_ahead_s
        self.max_batch = max_batch  # behind schedule: catch up in batches, not all at once
        self.behind = False
        self.events: Iterator[dict[str, Any]] = self.sim.events()
        self.rate = rate
        self.stop = stop
        self.duration = duration
        self.created = time.monotonic()
        self.started: float | None = None  # the clock starts once the engine is warm
        self.deadline: float | None = None
        self.resume = resume or 0
        self.emitted = 0
        # events taken from the simulation's stream: its prefix a resume skips. The pipe's
        # undelivered events a stop flushes are not in it (the stream yields them again,
        # later: a resume redelivers them, as a producer's retry would)
        self.taken = 0
        self.sent = 0  # since the clock started: what the pace is measured against
        self.done = False
        self.drain = Drain()

    def _warm(self) -> bool:
        if not self.sim.warm_up(self.WARM_SLICE_S):
            return False
        # a resume replays the prefix it had sent (the engine is deterministic), in slices
        # too: a day at 1,000 events/s is 86 M events, over 20 min to simulate again
        deadline = time.monotonic() + self.WARM_SLICE_S
        while self.taken < self.resume:
            step = min(1000, self.resume - self.taken)
            for _ in range(step):
                next(self.events, None)
            self.taken += step
            if self.taken < self.resume and time.monotonic() > deadline:
                return False
        self.emitted = self.taken
        self.started = time.monotonic()
        self.deadline = None if self.duration is None else self.started + self.duration
        return True

    def next_batch(self) -> list[Chunk]:
        if self.done:
            return [Chunk("engine", self.emitted + 1, [], True, 1,
                          draining=self.drain.next_step())]
        if self.started is None and not self._warm():
            if self.stop.is_set():  # stopped while warming up: end with nothing sent
                self.done = True
                return [Chunk("engine", self.emitted + 1, [], True, 1,
                              draining=self.drain.draining(True))]
            return []
        assert self.started is not None
        now = time.monotonic()
        ended = self.stop.is_set() or (self.deadline is not None and now >= self.deadline)
        due = int((now - self.started) * self.rate) - self.sent
        self.behind = due > self.max_batch
        due = min(due, self.max_batch)
        records: list[dict[str, Any]] = []
        while len(records) < due:  # nothing due yet: emit nothing, rather than one event
            event = next(self.events, None)
            if event is None:  # a finite simulation is over
                ended = True
                break
            records.append(event)
        self.taken += len(records)
        if ended:
            self.done = True
            records.extend(self.sim.undelivered())
        self.emitted += len(records)
        self.sent += len(records)
        first = self.emitted - len(records) + 1
        return [Chunk("engine", first, records, ended, 1, draining=self.drain.draining(ended),
                      max_ahead_s=self.max_ahead_s, own_time=True)]

    def next_awake(self) -> datetime | None:
        if self.done or self.behind or self.started is None:
            return None  # at once
        return datetime.now(UTC) + self.TICK

    def snapshot(self) -> int:
        return self.taken


class EngineSource(FixedPartitionedSource[Chunk, int]):
    """Live traffic from the reference engine, paced at `rate` events per wall-clock second."""

    def __init__(self, config: SimConfig, rate: float, duration: float | None = None,
                 stop: StopSignal | None = None, max_batch: int = 2000,
                 max_ahead_s: float = 0) -> None:
        """`max_ahead_s`: how far an event may be ahead of the wall clock and past the
        other event times of its chunk (0: no bound; `decoding.reach`)."""
        self.config = config
        self.max_ahead_s = max_ahead_s or math.inf
        self.max_batch = max_batch
        self.rate = rate
        self.duration = duration
        self.stop = stop or StopSignal()
        self.partition: _EnginePartition | None = None

    def list_parts(self) -> list[str]:
        return ["engine"]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None
                   ) -> _EnginePartition:
        self.partition = _EnginePartition(self.config, self.rate, self.duration, self.stop,
                                          resume_state, self.max_batch, self.max_ahead_s)
        return self.partition

    def warm_up_left_s(self) -> float | None:
        """Seconds of trading the engine has still to live through before its first event
        (read from another thread: the heartbeat); None when it is not warming up."""
        part = self.partition
        left = 0.0 if part is None or part.started is not None else part.sim.warm_up_left_s()
        return left or None

    def warm_up_took_s(self) -> float:
        """Wall-clock seconds the warm-up took (0 without one, or before it ended)."""
        part = self.partition
        if part is None or part.started is None or not self.config.warm_up:
            return 0.0
        return part.started - part.created
