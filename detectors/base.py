"""The small protocol every detector follows, and the pieces they share.

In the spirit of River's `learn_one`: a detector is a plain class fed one event at a time.
Time is event time only. `advance(now)` tells a detector that event time has reached
`now` (the watermark), so it can fire the timeouts that fell due; nothing reads the wall
clock, so replaying a week gives the same alerts as living through it.

Two kinds:
- order detectors see every event of the orders of their shard, with the order's tracked
  state (`OrderState`, kept by the `OrderBook`), and forget an order when it leaves memory;
- aggregate detectors see what `route(event, order)` sends them, keyed by a gateway, a
  lock family, a user: usually the event itself, sometimes a derived fact ("this order,
  created at t, left pending payment"); they hold per-key state.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import operator
from collections.abc import Hashable, Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Protocol

from orderwatch.events import Event

if TYPE_CHECKING:
    from orderwatch.detectors.order_book import OrderState

FIRING = "firing"
RESOLVED = "resolved"


@dataclass(slots=True)
class Alert:
    """One alert notification: a firing or a resolved transition. Times are event time."""

    alert: str
    status: str
    severity: str
    labels: dict[str, str]
    starts_at: float
    ends_at: float | None
    value: float
    summary: str
    fingerprint: str = field(default="")
    # the summary in Chinese for robot messages (ORDERWATCH_LANGUAGE=zh); `summary` stays
    # the English of the alert log, ClickHouse and --alerts-out
    summary_zh: str = ""

    def __post_init__(self) -> None:
        if not self.fingerprint:
            self.fingerprint = fingerprint(self.alert, self.labels)

    def __reduce__(self) -> tuple:
        # its fields as arguments pickle in 2/3 of the time of the slots' dict: recovery
        # snapshots hold every firing alert, and alerts cross processes to the leader
        return Alert, _alert_arguments(self)

    def __setstate__(self, state: tuple[None, dict[str, Any]]) -> None:
        # pickle's (None, slots) of a recovery snapshot written before `summary_zh` existed
        slots = state[1]
        for f in fields(self):
            object.__setattr__(self, f.name, slots.get(f.name, f.default))


# every field in __init__'s order, read from the dataclass so a field added later pickles too
_alert_arguments = operator.attrgetter(*(f.name for f in fields(Alert)))


def fingerprint(alert: str, labels: Mapping[str, str]) -> str:
    text = alert + "".join(f"\x00{k}\x01{labels[k]}" for k in sorted(labels))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


# What a detector's `streams` says: the streams whose events its `learn_one` (an order
# detector's) or `route` (an aggregate detector's) reads. A shard gives it no others: a
# callback need not pass through eight detectors that look only at orders.
ORDERS = frozenset({"order"})
CALLBACKS = frozenset({"callback"})
ORDERS_AND_CALLBACKS = ORDERS | CALLBACKS
ORDERS_AND_LOGISTICS = ORDERS | {"logistics"}
NO_STREAMS: frozenset[str] = frozenset()


class OrderDetector(Protocol):
    streams: frozenset[str]

    def learn_one(self, event: Event, order: OrderState) -> Iterable[Alert]: ...

    def advance(self, now: float, orders: Mapping[str, OrderState]) -> Iterable[Alert]: ...

    def timers(self) -> Iterable[Deadlines]:
        """Every timer `advance` acts on. While none of them is due, `advance` returns
        nothing and changes nothing, so a caller may skip it (`any_timer_due`)."""

    def forget(self, order_no: str, now: float) -> Iterable[Alert]:
        """The order leaves memory: drop what is kept for it, and resolve its alerts still
        firing (nothing could resolve them later)."""


LEFT_MEMORY = "the order left OrderWatch's memory (no events for its retention period)"
LEFT_MEMORY_ZH = "订单已离开 OrderWatch 内存（保留期内没有新事件）"


class AggregateDetector(Protocol):
    streams: frozenset[str]

    def route(self, event: Event, order: OrderState) -> Iterable[tuple[str, Any]]:
        """(key, payload) pairs this detector wants: usually (a gateway, the event)."""

    def learn_one(self, payload: Any, key: str) -> Iterable[Alert]: ...

    def advance(self, now: float) -> Iterable[Alert]: ...

    def next_due(self) -> float:
        """The earliest event time at which `advance` has anything to do: before it,
        `advance` returns nothing and changes nothing, so a caller may skip it. Asked
        again after each `learn_one` and `advance`. (Order detectors name their timers
        instead: every event may reach all of them, and one look at each heap is cheaper
        than asking each.)"""


class InstantOrderDetector:
    """Base for per-order detectors whose alerts mark an instant (a skewed clock, an
    illegal jump): `learn_one` proposes, event time releases, the hold resolves."""

    book: AlertBook

    def advance(self, now: float, orders: Mapping[str, OrderState]) -> list[Alert]:
        return self.book.release(now)

    def timers(self) -> tuple[Deadlines, ...]:
        return self.book.timers()

    def forget(self, order_no: str, now: float) -> list[Alert]:
        """Nothing kept per order beyond open alerts, which resolve on their own."""
        return []


STALE_SLACK = 1024  # stale heap entries tolerated beyond the live ones before a rebuild


def mostly_stale(heap: Sized, live: int) -> bool:
    """Whether a heap cleaned lazily (`Deadlines`, the order book's expiry) holds more stale
    entries than live ones, beyond the slack: then rebuilding it from the live ones pays."""
    return len(heap) > 2 * live + STALE_SLACK


class Deadlines:
    """Event-time timers: schedule a key at a time; `due(now)` returns keys whose time passed.

    Rescheduling a key replaces its previous time. Old heap entries are skipped lazily, and
    the heap is rebuilt from the live times once stale entries outnumber them (as asyncio
    does with cancelled timers): an order rescheduled when it finishes would otherwise
    leave its 14-day idle entry behind for 14 days.

    Keys due at the same time come out in key order, so the keys of one instance must be
    comparable with each other (strings, tuples of strings); no sequence number is kept,
    as every open order has entries here (memory per open order, issue #8).
    """

    __slots__ = ("_at", "_heap")

    def __init__(self) -> None:
        self._heap: list[tuple[float, Any]] = []
        self._at: dict[Hashable, float] = {}

    def schedule(self, key: Hashable, at: float) -> None:
        self._at[key] = at
        heapq.heappush(self._heap, (at, key))
        self._compact_if_stale()

    def when(self, key: Hashable) -> float | None:
        return self._at.get(key)

    def cancel(self, key: Hashable) -> None:
        if self._at.pop(key, None) is not None:
            self._compact_if_stale()

    def _compact_if_stale(self) -> None:
        if mostly_stale(self._heap, len(self._at)):
            self._heap = [(at, key) for key, at in self._at.items()]
            heapq.heapify(self._heap)

    def due(self, now: float) -> list[tuple[Hashable, float]]:
        """Remove and return the keys whose time passed, earliest first. A list, so the
        caller may reschedule while it goes through them; usually empty, and cheap then."""
        heap = self._heap
        if not heap or heap[0][0] > now:
            return []
        at = self._at
        out = []
        while heap and heap[0][0] <= now:
            when, key = heapq.heappop(heap)
            if at.get(key) == when:
                del at[key]
                out.append((key, when))
        self._compact_if_stale()
        return out

    def __len__(self) -> int:
        return len(self._at)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._at


def any_timer_due(timers: Iterable[Deadlines], now: float) -> bool:
    """Whether any of these timers has reached `now`. One look at each heap's top, so a
    shard can ask it for every event instead of calling each detector's `advance`; a
    stale top only makes the answer True early, which costs a call and nothing else."""
    for timer in timers:
        heap = timer._heap
        if heap and heap[0][0] <= now:
            return True
    return False


def earliest_due(timers: Iterable[Deadlines]) -> float:
    """The earliest time in these timers, or infinity: an aggregate detector's `next_due`
    when timers are all it acts on (a stale entry only makes it early)."""
    return min((timer._heap[0][0] for timer in timers if timer._heap), default=math.inf)


class AlertBook:
    """Which alerts of one detector are firing; turns conditions into transitions.

    Alert content must not depend on the order events arrive in, only on event time, so
    a replay, a split input or a Kafka consumer with other partitions all say the same:
    - `propose` records a condition seen at event time `at`; the earliest proposal per
      key wins, and it is emitted by `release(now)` once the watermark has passed `at`
      (every event up to then has arrived);
    - `fire` and `resolve` emit at once, for callers that already waited for the
      watermark (timers, window evaluations).
    With `hold_s`, an alert marking an instant (a duplicate, an overrun) resolves by
    itself after `hold_s` of event time without recurring.
    """

    __slots__ = ("_firing", "_hold", "_holds", "_proposed", "_release", "name", "severity")

    def __init__(self, name: str, severity: str, hold_s: float | None = None) -> None:
        self.name = name
        self.severity = severity
        self._firing: dict[Hashable, Alert] = {}
        self._proposed: dict[Hashable, Alert] = {}
        self._release = Deadlines()
        self._hold = hold_s
        self._holds = Deadlines()

    def propose(self, key: Hashable, labels: dict[str, str], at: float, value: float,
                summary: str, summary_zh: str = "") -> None:
        if key in self._firing:
            self._extend_hold(key, at)
            return
        current = self._proposed.get(key)
        if current is None or (at, summary) < (current.starts_at, current.summary):
            self._proposed[key] = Alert(self.name, FIRING, self.severity, labels, at, None,
                                        value, summary, summary_zh=summary_zh)
            self._release.schedule(key, at)

    def timers(self) -> tuple[Deadlines, ...]:
        """What `release` acts on: proposals waiting for the watermark, holds running."""
        return self._release, self._holds

    def release(self, now: float) -> list[Alert]:
        """Emit proposals the watermark has passed, then resolve expired holds."""
        if not any_timer_due(self.timers(), now):
            return []  # nothing due: a caller that did not ask `timers()` first
        out = []
        for key, _ in self._release.due(now):
            alert = self._proposed.pop(key)
            self._firing[key] = alert
            self._extend_hold(key, alert.starts_at)
            out.append(alert)
        for key, when in self._holds.due(now):
            alert = self.resolve(key, when)
            if alert is not None:
                out.append(alert)
        return out

    def fire(self, key: Hashable, labels: dict[str, str], at: float, value: float,
             summary: str, summary_zh: str = "") -> Alert | None:
        if key in self._firing:
            return None
        alert = Alert(self.name, FIRING, self.severity, labels, at, None, value, summary,
                      summary_zh=summary_zh)
        self._firing[key] = alert
        self._extend_hold(key, at)
        return alert

    def resolve(self, key: Hashable, at: float, summary: str | None = None,
                summary_zh: str | None = None) -> Alert | None:
        opened = self._firing.pop(key, None)
        if opened is None:
            return None
        self._holds.cancel(key)
        return Alert(self.name, RESOLVED, self.severity, opened.labels, opened.starts_at,
                     max(at, opened.starts_at), opened.value, summary or opened.summary,
                     opened.fingerprint, summary_zh or opened.summary_zh)

    def left_memory(self, keys: Iterable[Hashable], now: float) -> list[Alert]:
        """Resolve what still fires for these keys: their order left memory, and nothing
        else could resolve it later."""
        resolved = (self.resolve(key, now, LEFT_MEMORY, LEFT_MEMORY_ZH) for key in keys)
        return [alert for alert in resolved if alert is not None]

    def is_firing(self, key: Hashable) -> bool:
        return key in self._firing

    def _extend_hold(self, key: Hashable, at: float) -> None:
        if self._hold is None:
            return
        end = at + self._hold
        current = self._holds.when(key)
        if current is None or end > current:
            self._holds.schedule(key, end)

    def __len__(self) -> int:
        return len(self._firing)


def run_on(events: Iterable[Event], order_detectors: Sequence[Any] = (),
           aggregate_detectors: Sequence[Any] = (), until: float | None = None,
           lateness_s: float = 300.0, risk: Any = None) -> list[Alert]:
    """Feed events, in the given arrival order, to detectors, outside any dataflow.

    As in the pipeline, events wait until event time (the latest seen, minus
    `lateness_s`) has passed them and are then applied oldest first; later ones are
    applied on arrival. After the last event, event time goes to the latest event
    time seen, or to `until` if that is later. A `risk` scorer sees every event and the
    order detectors' alerts (channel verdicts stay in `risk.verdicts`).
    """
    from orderwatch.detectors.event_time import ReorderBuffer
    from orderwatch.detectors.order_book import OrderBook

    book = OrderBook()
    buffer: ReorderBuffer[Event] = ReorderBuffer()
    alerts: list[Alert] = []

    def advance(now: float) -> None:
        new: list[Alert] = []
        for det in order_detectors:
            new.extend(det.advance(now, book.orders))
        alerts.extend(new)
        if risk is not None:
            alerts.extend(risk.observe(new, book.orders, now))
            alerts.extend(risk.advance(now, book.orders))
        for det in aggregate_detectors:
            alerts.extend(det.advance(now))

    def apply(event: Event) -> None:
        order, fresh = book.apply(event)
        if not fresh:
            return
        new: list[Alert] = []
        for det in order_detectors:
            new.extend(det.learn_one(event, order))
        alerts.extend(new)
        if risk is not None:
            alerts.extend(risk.learn_one(event, order))
            alerts.extend(risk.observe(new, book.orders, event.ts))
        for det in aggregate_detectors:
            for key, payload in det.route(event, order):
                alerts.extend(det.learn_one(payload, key))

    def release(watermark: float) -> None:
        for event in buffer.release(watermark):
            advance(event.ts)
            apply(event)
        advance(watermark)

    latest = -float("inf")
    for event in events:
        if not buffer.push_event(event):
            apply(event)  # later than the allowed lateness
        if event.ts > latest:
            latest = event.ts
            release(latest - lateness_s)
    release(until if until is not None and until > latest else latest)
    return alerts
