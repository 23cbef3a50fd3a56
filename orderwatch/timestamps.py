"""Event time is carried as POSIX seconds (float); these turn it into text and back."""

from __future__ import annotations

from datetime import UTC, datetime, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo


@lru_cache(maxsize=16)
def zone(name: str) -> timezone | ZoneInfo:
    return UTC if name.upper() in ("UTC", "Z") else ZoneInfo(name)


def to_datetime(ts: float, tz: str = "UTC") -> datetime:
    return datetime.fromtimestamp(ts, zone(tz))


def to_rfc3339(ts: float, tz: str = "UTC") -> str:
    """RFC 3339 with milliseconds only when there are any: 2026-02-23T10:15:00+08:00."""
    dt = to_datetime(ts, tz)
    text = dt.isoformat(timespec="milliseconds" if dt.microsecond else "seconds")
    return text.replace("+00:00", "Z") if tz.upper() in ("UTC", "Z") else text


def from_rfc3339(text: str) -> float:
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset")
    return dt.timestamp()


def duration_text(seconds: float, language: str = "en") -> str:
    """Human duration for alert summaries: 14 min, 31 h, 2.5 s (zh: 14 分钟, 31 小时)."""
    hours, minutes, secs = ("小时", "分钟", "秒") if language == "zh" else ("h", "min", "s")
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.0f} {hours}"
    if seconds >= 120:
        return f"{seconds / 60:.0f} {minutes}"
    return f"{seconds:.1f} {secs}"


__all__ = ["duration_text", "from_rfc3339", "to_datetime", "to_rfc3339", "zone"]
