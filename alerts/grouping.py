"""Alertmanager's grouping timers, for OrderWatch's own alerts.

Notices are grouped by the values of `by` (default: the alert and its dimension). A new
group waits `wait_s` to collect its first batch; after a message went out, new notices of
the group wait until `interval_s` after it; while any of the group's alerts still fires
and nothing was sent for `repeat_s`, its firing alerts are sent again as reminders. A
group whose alerts have all resolved is forgotten, so its next alert waits `wait_s` again.

The relay uses `IMMEDIATE`: Alertmanager has already grouped and timed what it sends.
"""

from __future__ import annotations

from dataclasses import dataclass

from orderwatch.alerts.notice import Notice

DEFAULT_GROUP_BY = ("alert", "gateway", "carrier", "channel", "warehouse", "lock_family",
                    "series")


@dataclass(frozen=True, slots=True)
class Grouping:
    by: tuple[str, ...] = DEFAULT_GROUP_BY
    wait_s: float = 30.0
    interval_s: float = 300.0
    repeat_s: float = 4 * 3600.0  # 0: no reminders

    def key(self, notice: Notice) -> str:
        labels = notice.route_labels
        return "\x1f".join(f"{name}={labels.get(name, '')}" for name in self.by)


IMMEDIATE = Grouping(by=(), wait_s=0.0, interval_s=0.0, repeat_s=0.0)
