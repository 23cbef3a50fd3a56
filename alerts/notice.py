"""One thing to tell a robot: an OrderWatch alert or an Alertmanager alert, in one shape."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orderwatch.alerts.notification import notification_key
from orderwatch.detectors.base import Alert
from orderwatch.timestamps import from_rfc3339


@dataclass(frozen=True, slots=True)
class Notice:
    key: str  # identity of this transition: the same notice twice is sent once
    alert: str
    status: str  # firing | resolved
    severity: str
    labels: Mapping[str, str]
    starts_at: float
    ends_at: float | None
    summary: str
    reminder: bool = False  # sent again: still firing after the route's repeat_interval
    summary_zh: str = ""  # the summary in Chinese, where the alert has one

    @property
    def route_labels(self) -> dict[str, str]:
        # `alertname` too: Alertmanager's users write it in silences, routes and group_by
        return {**self.labels, "alert": self.alert, "alertname": self.alert,
                "severity": self.severity}

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "alert": self.alert, "status": self.status,
                "severity": self.severity, "labels": dict(self.labels),
                "starts_at": self.starts_at, "ends_at": self.ends_at, "summary": self.summary,
                "reminder": self.reminder, "summary_zh": self.summary_zh}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Notice:
        return cls(d["key"], d["alert"], d["status"], d["severity"], d["labels"],
                   d["starts_at"], d["ends_at"], d["summary"], d.get("reminder", False),
                   d.get("summary_zh", ""))


def from_alert(alert: Alert) -> Notice:
    key = notification_key(alert.fingerprint, alert.status, alert.starts_at)
    return Notice(key, alert.alert, alert.status, alert.severity, dict(alert.labels),
                  alert.starts_at, alert.ends_at, alert.summary, summary_zh=alert.summary_zh)


def _time(alert: Mapping[str, Any], name: str) -> float | None:
    text = alert.get(name)
    if not text or (isinstance(text, str) and text.startswith("0001-01-01")):  # "not set"
        return None
    try:
        return from_rfc3339(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"alert {name} {str(text)[:64]!r} is not an RFC 3339 time") from None


def _mapping(alert: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = alert.get(name) or {}
    if not isinstance(value, Mapping):
        raise ValueError(f"alert {name} must be an object, got {type(value).__name__}")
    return value


def from_alertmanager(alert: Mapping[str, Any]) -> Notice:
    """One entry of an Alertmanager webhook (version 4) `alerts` list; ValueError says
    what is wrong with it."""
    if not isinstance(alert, Mapping):
        raise ValueError(f"each alert must be an object, got {type(alert).__name__}")
    labels = {str(k): str(v) for k, v in _mapping(alert, "labels").items()}
    notes = _mapping(alert, "annotations")
    status = alert.get("status")
    if status not in ("firing", "resolved"):
        raise ValueError(f"alert status must be firing or resolved, got {status!r}")
    starts_at = _time(alert, "startsAt")
    if starts_at is None:
        raise ValueError("alert has no startsAt")
    fingerprint = str(alert.get("fingerprint") or sorted(labels.items()))
    name = labels.pop("alertname", "alert")
    severity = labels.pop("severity", "warning")
    ends_at = _time(alert, "endsAt") if status == "resolved" else None
    return Notice("am:" + notification_key(fingerprint, status, starts_at), name, status,
                  severity, labels, starts_at, ends_at,
                  str(notes.get("summary") or notes.get("description") or name),
                  summary_zh=str(notes.get("summary_zh") or ""))
