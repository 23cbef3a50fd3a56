"""Status changes against the reference state machine: `illegal_transition`, `status_flapping`.

Status-code mapping errors between systems make orders jump (pending payment → shipped).
Automation rules that react to intermediate ERP states make them loop: the seeds' ghost
loop flips 待发货 ↔ 已发货 every 17 minutes and prints 42 labels. Changes are read in
event-time order from the order book: `prev_status` is what OrderWatch saw before.
"""

from __future__ import annotations

import sys

from orderwatch.config import DEFAULT_THRESHOLDS, Thresholds
from orderwatch.detectors.base import ORDERS, Alert, AlertBook, InstantOrderDetector
from orderwatch.detectors.order_book import OrderState, intern_value
from orderwatch.engine import state_machine as sm
from orderwatch.events import Event


def status_change(event: Event, order: OrderState) -> tuple[str | None, str] | None:
    """(from, to) of an order event, by what was seen before it; None if not a change."""
    if event.stream != "order":
        return None
    new = event.data["status"]
    prev = order.prev_status
    if prev is None and event.data["action"] != "create":
        prev = event.data.get("prev_status")  # no history (or a late event): the source's
        if prev is None:
            return None
    if prev == new:
        return None
    # one string per status for all orders, not the parsed event's copy: StatusFlapping
    # keeps an order's recent changes (memory per open order, issue #8)
    return intern_value(prev), sys.intern(new)


class IllegalTransition(InstantOrderDetector):
    name = "illegal_transition"
    streams = ORDERS

    def __init__(self, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> None:
        self.book = AlertBook(self.name, "warning", hold_s=thresholds.instant_alert_hold_s)

    def learn_one(self, event: Event, order: OrderState) -> list[Alert]:
        change = status_change(event, order)
        if change is None or sm.is_legal(*change):
            return []
        prev, new = change
        source = event.data["source"]
        self.book.propose(
            event.order_no, {"order_no": event.order_no, "transition": f"{prev}→{new}",
                             "source": source},
            event.ts, 1.0,
            f"{source} {event.data['action']} moved the order {prev} → {new}, which the "
            "state machine does not allow",
            f"{source} {event.data['action']} 将订单从{sm.status_text(prev, 'zh')}改为"
            f"{sm.status_text(new, 'zh')}，状态机不允许此流转")
        return []


class StatusFlapping(InstantOrderDetector):
    name = "status_flapping"
    streams = ORDERS

    def __init__(self, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> None:
        self.min_alternations = thresholds.flapping_min_alternations
        self.window = thresholds.flapping_window_s
        self.book = AlertBook(self.name, "warning", hold_s=thresholds.instant_alert_hold_s)
        # each order's recent changes as one flat tuple, (time, from, to) after each other:
        # a deque took 760 bytes per order that changed status and pickled several times
        # slower (recovery snapshots), a list of a tuple per change ~200 bytes
        self._changes: dict[str, tuple[float | str | None, ...]] = {}

    def __setstate__(self, state: dict) -> None:
        """Snapshots from before the flat tuples hold a deque or list of tuples per order."""
        changes = state.get("_changes", {})
        for order_no, kept in changes.items():
            if kept and isinstance(kept[0], tuple):
                changes[order_no] = tuple(x for change in kept for x in change)
        self.__dict__.update(state)

    def learn_one(self, event: Event, order: OrderState) -> list[Alert]:
        change = status_change(event, order)
        if change is None or change[0] is None:
            return []
        changes = (*self._changes.get(event.order_no, ()), event.ts, *change)
        oldest = event.ts - self.window
        while changes[0] < oldest:  # type: ignore[operator]
            changes = changes[3:]  # this change itself is not older than the window
        self._changes[event.order_no] = changes
        count = self._alternations(changes)
        if count >= self.min_alternations:
            statuses = sorted(change)  # type: ignore[arg-type]
            pair = "↔".join(statuses)
            pair_zh = "↔".join(sm.status_text(s, "zh") for s in statuses)
            self.book.propose(
                event.order_no, {"order_no": event.order_no, "statuses": pair}, event.ts,
                float(count),
                f"status alternated {pair} {count} times within {self.window / 3600:.0f} h",
                f"{self.window / 3600:.0f} 小时内状态在{pair_zh}间来回 {count} 次")
        return []

    @staticmethod
    def _alternations(changes: tuple[float | str | None, ...]) -> int:
        """How many of the latest changes alternate between the same two statuses."""
        a, b = changes[-2], changes[-1]
        count = 0
        expect_to = b
        for i in range(len(changes) - 3, -1, -3):
            frm, to = changes[i + 1], changes[i + 2]
            # the same two statuses ({frm, to} == {a, b}), the other way round each time
            if to != expect_to or frm != (a if to == b else b):
                break
            count += 1
            expect_to = frm
        return count

    def forget(self, order_no: str, now: float) -> list[Alert]:
        self._changes.pop(order_no, None)
        return []  # its alerts mark an instant and resolve on their own
