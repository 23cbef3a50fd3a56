"""The alert notification as it leaves OrderWatch (`shared/contract/outputs.md`)."""

from __future__ import annotations

from typing import Any

from orderwatch.detectors.base import Alert
from orderwatch.timestamps import to_rfc3339


def notification_key(fingerprint: str, status: str, starts_at: float) -> str:
    """One notification's identity: the same transition redelivered has the same key."""
    return f"{fingerprint}:{status}:{starts_at:.3f}"


def to_record(alert: Alert, tz: str = "Asia/Shanghai") -> dict[str, Any]:
    return {
        "alert": alert.alert,
        "status": alert.status,
        "severity": alert.severity,
        "labels": alert.labels,
        "starts_at": to_rfc3339(alert.starts_at, tz),
        "ends_at": None if alert.ends_at is None else to_rfc3339(alert.ends_at, tz),
        "value": alert.value,
        "summary": alert.summary,
        "fingerprint": alert.fingerprint,
    }


def console_line(alert: Alert, tz: str = "Asia/Shanghai") -> str:
    """One readable line: [FIRING] callback_lost order_no=ORD1 gateway=alipay — summary."""
    labels = " ".join(f"{k}={v}" for k, v in alert.labels.items())
    when = to_rfc3339(alert.starts_at if alert.status == "firing" else alert.ends_at, tz)
    return f"{when} [{alert.status.upper()}] {alert.severity:<8} {alert.alert} {labels} — " \
           f"{alert.summary}"
