"""Distributed-lock health: `lock_ttl_overrun` (per order) and `lock_contention` (per family).

A lock whose TTL (30 s) is shorter than the critical section (32.7 s) lets a second
request in: any operation that held its lock longer than the TTL is an overrun. Per lock
family, waits whose p95 over 5 minutes exceeds 200 ms, or more than 5% failed
acquisitions, mean contention (a hot or too coarse key).
"""

from __future__ import annotations

import re

from orderwatch.config import DEFAULT_THRESHOLDS, Thresholds
from orderwatch.detectors import wait_histogram
from orderwatch.detectors.base import ORDERS, Alert, AlertBook, InstantOrderDetector
from orderwatch.detectors.order_book import OrderState
from orderwatch.detectors.sliding_window import SlidingCounts
from orderwatch.events import Event

_DIGIT = re.compile(r"[0-9]")


def lock_family(key: str) -> str:
    """The key with its identifiers stripped: `lock:ship:ORD123` → `lock:ship`,
    `stock:SKU-1:WH-EAST` → `stock`. Identifiers are the first segment holding a digit."""
    if not key.isascii():  # str.isdigit() takes more than 0-9 there
        return lock_family_by_segments(key)
    # nearly every key: the segments before the first digit, at C speed
    digit = _DIGIT.search(key)
    if digit is None:
        return key
    cut = key.rfind(":", 0, digit.start())
    return key[:cut] if cut > 0 else key


def lock_family_by_segments(key: str) -> str:
    """`lock_family` by its definition, one segment at a time: any key, any digit."""
    family = []
    for part in key.split(":"):
        if any(c.isdigit() for c in part):
            break
        family.append(part)
    return ":".join(family) or key


class LockTtlOverrun(InstantOrderDetector):
    name = "lock_ttl_overrun"
    streams = ORDERS

    def __init__(self, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> None:
        self.book = AlertBook(self.name, "warning", hold_s=thresholds.instant_alert_hold_s)

    def learn_one(self, event: Event, order: OrderState) -> list[Alert]:
        lock = event.data.get("lock") if event.stream == "order" else None
        if not lock or not lock["acquired"]:
            return []
        held, ttl = lock.get("held_ms"), lock["ttl_ms"]
        if held is None or held <= ttl:
            return []
        family = lock_family(lock["key"])
        self.book.propose(
            (event.order_no, family), {"order_no": event.order_no, "lock_family": family},
            event.ts, float(held),
            f"{event.data['action']} held {lock['key']} for {held / 1000:.1f} s, "
            f"longer than its {ttl / 1000:.1f} s TTL",
            f"{event.data['action']} 持有锁 {lock['key']} {held / 1000:.1f} 秒，"
            f"超过其 TTL {ttl / 1000:.1f} 秒")
        return []


class LockContention:
    name = "lock_contention"
    streams = ORDERS

    def __init__(self, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> None:
        self.slow_ms = thresholds.lock_wait_p95_ms
        self.failure_ratio = thresholds.lock_failure_ratio
        self.min_count = thresholds.lock_min_count
        self.window = thresholds.lock_window_s
        # [attempts, failed, waits over the threshold, *wait histogram]
        self.counts = SlidingCounts(self.window, 3 + wait_histogram.WIDTH)
        self.book = AlertBook(self.name, "warning")

    def route(self, event: Event, order: OrderState) -> list[tuple[str, Event]]:
        lock = event.data.get("lock") if event.stream == "order" else None
        return [(lock_family(lock["key"]), event)] if lock else []

    def learn_one(self, event: Event, key: str) -> list[Alert]:
        lock = event.data["lock"]
        wait = lock["wait_ms"]
        values = [0.0] * self.counts.width
        values[0] = 1.0
        values[1] = 0.0 if lock["acquired"] else 1.0
        values[2] = 1.0 if wait > self.slow_ms else 0.0
        values[3 + wait_histogram.bucket(wait)] = 1.0
        self.counts.add(key, event.ts, values)
        return []

    def next_due(self) -> float:
        return self.counts.next_due()

    def advance(self, now: float) -> list[Alert]:
        out = []
        for family, at, sums in self.counts.windows(now):
            attempts, failed, slow = sums[0], sums[1], sums[2]
            alert = None
            if attempts >= self.min_count:
                # p95 > threshold exactly when more than 5% of the waits exceed it
                slow_share, fail_share = slow / attempts, failed / attempts
                if slow_share > 0.05 or fail_share > self.failure_ratio:
                    p95 = min(wait_histogram.quantile(sums[3:], 0.95),
                              wait_histogram.BOUNDS_MS[-1])  # a finite alert value
                    alert = self.book.fire(
                        family, {"lock_family": family}, at, p95,
                        f"{family}: lock wait p95 ≈ {p95:.0f} ms, {fail_share:.1%} of "
                        f"{attempts:.0f} acquisitions failed over {self.window / 60:.0f} min",
                        f"{family}：{self.window / 60:.0f} 分钟内等锁 p95 ≈ {p95:.0f} 毫秒，"
                        f"{attempts:.0f} 次加锁失败 {fail_share:.1%}")
                else:
                    alert = self.book.resolve(family, at)
            else:
                alert = self.book.resolve(family, at)
            if alert is not None:
                out.append(alert)
        return out
