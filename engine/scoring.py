"""Match alert notifications to the simulator's ground-truth labels: precision, recall, delay.

A per-order label matches a firing alert of the same name for the same order. An
aggregate label (a gateway, a lock family) matches a firing alert of the same name and
dimension that starts inside the labelled window (give or take `slack_s`). An alert no
label explains is a false positive; a label no alert matched is a miss. Delay is event
time from the label's start to the matched alert's `starts_at`.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from orderwatch.timestamps import from_rfc3339

DIMENSIONS = ("gateway", "carrier", "channel", "warehouse", "lock_family")


@dataclass
class AlertQuality:
    alert: str
    labelled: int = 0
    detected: int = 0
    alerts: int = 0
    false_alerts: int = 0
    delays_s: list[float] = field(default_factory=list)

    @property
    def recall(self) -> float:
        return self.detected / self.labelled if self.labelled else 1.0

    @property
    def precision(self) -> float:
        return (self.alerts - self.false_alerts) / self.alerts if self.alerts else 1.0

    @property
    def median_delay_s(self) -> float | None:
        return statistics.median(self.delays_s) if self.delays_s else None

    def as_dict(self) -> dict[str, Any]:
        return {"alert": self.alert, "labelled": self.labelled, "detected": self.detected,
                "alerts": self.alerts, "false_alerts": self.false_alerts,
                "precision": round(self.precision, 4), "recall": round(self.recall, 4),
                "median_delay_s": self.median_delay_s}


def score(alerts: Iterable[dict[str, Any]], labels: Iterable[dict[str, Any]],
          slack_s: float = 600.0) -> dict[str, AlertQuality]:
    """Alerts and labels as their JSON objects (`--alerts-out` lines, `--labels` lines)."""
    firing = [a for a in alerts if a["status"] == "firing"]
    result: dict[str, AlertQuality] = {}

    def quality(name: str) -> AlertQuality:
        return result.setdefault(name, AlertQuality(name))

    per_order: dict[tuple[str, str], list[float]] = defaultdict(list)
    aggregate: dict[tuple[str, tuple], list[tuple[float, float | None]]] = defaultdict(list)
    for label in labels:
        start = from_rfc3339(label["start"])
        end = from_rfc3339(label["end"]) if label.get("end") else None
        if label.get("order_no"):
            per_order[(label["fault"], label["order_no"])].append(start)
        else:
            aggregate[(label["fault"], _dims(label["labels"]))].append((start, end))
        quality(label["fault"]).labelled += 1

    matched: set[tuple] = set()
    for alert in sorted(firing, key=lambda a: from_rfc3339(a["starts_at"])):
        name = alert["alert"]
        q = quality(name)
        q.alerts += 1
        at = from_rfc3339(alert["starts_at"])
        order_no = alert["labels"].get("order_no")
        if order_no is not None:
            starts = per_order.get((name, order_no))
            if not starts:
                q.false_alerts += 1
                continue
            key: tuple = (name, order_no)
            if key not in matched:
                matched.add(key)
                q.detected += len(starts)
                q.delays_s.append(at - min(starts))
            continue
        windows = aggregate.get((name, _dims(alert["labels"])), [])
        candidates = [
            (key not in matched, -abs(at - start), i) for i, (start, end) in enumerate(windows)
            if start - slack_s <= at <= (end if end is not None else float("inf")) + slack_s
            for key in [(name, _dims(alert["labels"]), i)]]
        hit = max(candidates)[2] if candidates else None  # unmatched first, then nearest
        if hit is None:
            q.false_alerts += 1
            continue
        key = (name, _dims(alert["labels"]), hit)
        if key not in matched:
            matched.add(key)
            q.detected += 1
            q.delays_s.append(max(0.0, at - windows[hit][0]))
    return result


def _dims(labels: dict[str, str]) -> tuple:
    return tuple((k, labels[k]) for k in DIMENSIONS if k in labels)


def format_table(result: dict[str, AlertQuality]) -> str:
    lines = [f"{'alert':<24} {'labelled':>8} {'detected':>8} {'alerts':>7} {'false':>6} "
             f"{'precision':>9} {'recall':>7} {'median delay':>13}"]
    for name in sorted(result):
        q = result[name]
        delay = "-" if q.median_delay_s is None else f"{q.median_delay_s / 60:.1f} min"
        lines.append(f"{name:<24} {q.labelled:>8} {q.detected:>8} {q.alerts:>7} "
                     f"{q.false_alerts:>6} {q.precision:>9.4f} {q.recall:>7.4f} {delay:>13}")
    return "\n".join(lines)
