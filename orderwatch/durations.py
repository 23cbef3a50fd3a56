"""Durations as operators write them: 90s, 30m, 2h, 1d (amtool's and Alertmanager's style)."""

from __future__ import annotations

import re

from orderwatch.config import ConfigError

_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str | int | float) -> float:
    """Seconds; a plain number is seconds already."""
    if isinstance(text, int | float) and not isinstance(text, bool) and text >= 0:
        return float(text)
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", str(text).strip())
    if m is None:
        raise ConfigError(f"bad duration {text!r}: use e.g. 30s, 30m, 2h or 1d")
    return float(m[1]) * _UNIT_S[m[2]]
