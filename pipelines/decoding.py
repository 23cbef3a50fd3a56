"""From raw input records to validated events and dead letters.

Sources hand over `Chunk`s: a batch of raw records (JSON text, or dicts from the engine)
from one input partition, with where they came from. Decoding never raises: every record
becomes an `Event` or a `DeadLetter` with its reason.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from orderwatch.events import Event, InvalidEvent, decode, validate
from orderwatch.timestamps import to_rfc3339

NEVER = -float("inf")


@dataclass(slots=True)
class Chunk:
    partition: str  # e.g. the file path, "engine", "orders/2"
    first_position: int  # position (line number, offset) of the first record
    records: list[Any]
    ended: bool = False  # this partition has no more input
    partitions: int = 1  # how many partitions the source has in all
    positions: list[int] | None = None  # per record (Kafka offsets); else consecutive
    idle: bool = False  # caught up for now (tailing Kafka): do not hold event time back
    # wall clock when the records entered the pipeline: alert latency is measured from here
    ingested_at: float = field(default_factory=time.time)
    source: str = ""  # what dead letters name as their source; "" for the partition
    draining: int = 0  # ended: how many empty chunks still follow (watermark.DRAIN_STEPS)
    # a blank line of a file carries no event; an empty Kafka message is a dead letter
    skip_empty: bool = True
    # a live feed's tolerance: an event more than this ahead of `ingested_at` (the wall
    # clock) is a clock fault, dead-lettered rather than moving event time there
    max_ahead_s: float = math.inf
    # a file or the engine keeps time of its own (a simulated week may lie ahead of the
    # wall clock): there an event is a clock fault only when it is also more than
    # `max_ahead_s` past the other event times of its chunk (`reach`)
    own_time: bool = False
    # the last chunk of a partition stopped by a signal: every process of a cluster stops
    # with it (`StopSignal.set_by_peer`), instead of waiting for partitions that never end
    stopping: bool = False

    @property
    def origin(self) -> str:
        return self.source or self.partition


@dataclass(slots=True)
class DeadLetter:
    source: str
    position: int
    payload: bytes
    reason: str
    # the latest event time read before it in its chunk: a dead letter has none of its
    # own, and this is when it arrived as far as event time can tell (NEVER: none yet)
    read_after: float = NEVER

    @property
    def id(self) -> bytes:
        """Identity of the bad record: the same line replayed again is the same dead letter."""
        h = hashlib.blake2b(digest_size=16)
        h.update(self.source.encode())
        h.update(self.position.to_bytes(8, "big"))
        h.update(self.payload)
        return h.digest()

    def reason_class(self) -> str:
        """Low-cardinality label: the reason up to its first colon or quote, numbers out
        (an oversized event's reason names its size)."""
        head = self.reason.split(":")[0].split("'")[0].strip()
        return re.sub(r"\d+", "n", head).replace(" ", "_").lower()[:48] or "invalid"


@dataclass(slots=True)
class Decoded:
    partition: str
    events: list[Event]
    dead: list[DeadLetter]
    max_ts: float
    ended: bool
    partitions: int
    records: int = 0
    idle: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    ingested_at: float = 0.0
    draining: int = 0
    stopping: bool = False


def _ahead_reason(ts: float, chunk: Chunk) -> str:
    return (f"occurred_at ahead of the wall clock: {to_rfc3339(ts)} is "
            f"{ts - chunk.ingested_at:,.0f} s ahead, more than the {chunk.max_ahead_s:,.0f} s "
            "allowed (ORDERWATCH_PIPELINE_MAX_AHEAD_OF_WALL_CLOCK_S)")


def _ahead_of_neighbours_reason(ts: float, runs_to: float, chunk: Chunk) -> str:
    return (f"occurred_at far ahead of the events read with it: {to_rfc3339(ts)} is "
            f"{ts - runs_to:,.0f} s past them (they run to {to_rfc3339(runs_to)} from their "
            f"median, with no gap over {chunk.max_ahead_s:,.0f} s) and "
            f"{ts - chunk.ingested_at:,.0f} s ahead of the wall clock, more than the "
            f"{chunk.max_ahead_s:,.0f} s allowed (ORDERWATCH_PIPELINE_MAX_AHEAD_OF_NEIGHBOURS_S)")


def reach(times: list[float], gap: float) -> float:
    """The latest of the sorted `times` reached from their (lower) median in steps of at
    most `gap`: where the chunk's own time runs to. An outlier far behind does not move
    it, nor does a sparse stretch (days a chunk, minutes an event) stop it."""
    end = times[(len(times) - 1) // 2]
    for t in times[(len(times) - 1) // 2 + 1:]:
        if t - end > gap:
            break
        end = t
    return end


def decode_chunk(chunk: Chunk, max_event_bytes: int = 1 << 20) -> Decoded:
    not_after = chunk.ingested_at + chunk.max_ahead_s
    decoded, ahead = _decode(chunk, max_event_bytes, not_after)
    if ahead:  # an event a day ahead of the wall clock: is it also past its chunk?
        times = sorted(event.ts for event in decoded.events)
        own = reach(times, chunk.max_ahead_s)
        if times[-1] > max(not_after, own):  # rare: read the chunk again, refusing it
            decoded, _ = _decode(chunk, max_event_bytes, max(not_after, own), own)
    return decoded


def _decode(chunk: Chunk, max_event_bytes: int, not_after: float,
            own: float | None = None) -> tuple[Decoded, bool]:
    """Also returns whether a chunk of a file or the engine had an event after
    `not_after`; given how far the chunk's `own` time runs, such an event is a dead
    letter."""
    events: list[Event] = []
    dead: list[DeadLetter] = []
    max_ts = NEVER
    positions = chunk.positions
    ahead = False
    for k, record in enumerate(chunk.records):
        position = positions[k] if positions is not None else chunk.first_position + k
        if not record and chunk.skip_empty:
            continue
        try:
            if not record:
                raise InvalidEvent("empty message")
            if isinstance(record, dict):
                event = validate(record)
            else:
                if len(record) > max_event_bytes:
                    raise InvalidEvent(f"event of {len(record)} bytes exceeds the "
                                       f"{max_event_bytes}-byte limit")
                event = decode(record)
            if event.ts > not_after:
                if not chunk.own_time:
                    raise InvalidEvent(_ahead_reason(event.ts, chunk))
                if own is not None:
                    raise InvalidEvent(_ahead_of_neighbours_reason(event.ts, own, chunk))
                ahead = True
        except InvalidEvent as exc:
            payload = orjson.dumps(record) if isinstance(record, dict) else (
                record if isinstance(record, bytes) else str(record).encode())
            dead.append(DeadLetter(chunk.origin, position, payload, str(exc), max_ts))
        else:
            events.append(event)
            if event.ts > max_ts:
                max_ts = event.ts
    return Decoded(chunk.partition, events, dead, max_ts, chunk.ended, chunk.partitions,
                   len(chunk.records), chunk.idle, ingested_at=chunk.ingested_at,
                   draining=chunk.draining, stopping=chunk.stopping), ahead
