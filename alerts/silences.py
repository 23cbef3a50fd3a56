"""Silences: label matchers with an expiry, as in Alertmanager (`orderwatch silence …`).

A matcher is `name=value`, `name!=value`, `name=~regex` or `name!~regex`; the alert name
is the label `alert` (or `alertname`). A silence matches a notice when every matcher
does. Silences live in SQLite under the state directory, so `orderwatch run` and the CLI
share them.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

from orderwatch.config import ConfigError

_MATCHER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$")


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    op: str
    value: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        have = labels.get(self.name, "")
        if self.op == "=":
            return have == self.value
        if self.op == "!=":
            return have != self.value
        hit = re.fullmatch(self.value, have) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value}"


def parse_matcher(text: str) -> Matcher:
    m = _MATCHER.match(text)
    if m is None:
        raise ConfigError(f"bad matcher {text!r}: use name=value, name!=value, name=~regex")
    name, op, value = m.groups()
    if op in ("=~", "!~"):
        try:
            re.compile(value)
        except re.error as exc:
            raise ConfigError(f"bad regex in {text!r}: {exc}") from None
    return Matcher(name, op, value)


@dataclass(frozen=True, slots=True)
class Silence:
    id: int
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    comment: str

    def matches(self, labels: Mapping[str, str], now: float) -> bool:
        return self.starts_at <= now < self.ends_at and all(
            m.matches(labels) for m in self.matchers)


class Silences:
    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.db.execute("CREATE TABLE IF NOT EXISTS silences (id INTEGER PRIMARY KEY, "
                        "matchers BLOB NOT NULL, starts_at REAL NOT NULL, "
                        "ends_at REAL NOT NULL, comment TEXT NOT NULL)")
        self.clock = clock

    def add(self, matchers: list[Matcher], duration_s: float, comment: str) -> Silence:
        if not matchers:
            raise ConfigError("a silence needs at least one matcher")
        if all(m.matches({}) for m in matchers):  # Alertmanager refuses these too
            raise ConfigError("at least one matcher must not match the empty string: as "
                              "given, the silence would mute every alert without those labels "
                              "(to mute all, say alert=~.+)")
        if not duration_s > 0:  # it would end as it starts, muting nothing
            raise ConfigError(f"a silence needs a duration above 0, got {duration_s:g} s")
        if not comment.strip():
            raise ConfigError("a silence needs a comment saying why")
        now = self.clock()
        ends_at = now + duration_s
        try:  # every command prints the end as a date; a date past 9999 has none
            datetime.fromtimestamp(ends_at, UTC)
        except (OverflowError, ValueError, OSError):
            raise ConfigError(f"a silence of {duration_s / 86400:,.0f} days is too long: it "
                              "would end after the year 9999") from None
        body = orjson.dumps([[m.name, m.op, m.value] for m in matchers])
        cursor = self.db.execute("INSERT INTO silences (matchers, starts_at, ends_at, comment) "
                                 "VALUES (?, ?, ?, ?)", (body, now, ends_at, comment))
        return Silence(cursor.lastrowid, tuple(matchers), now, ends_at, comment)

    def expire(self, silence_id: int) -> None:
        now = self.clock()
        row = self.db.execute("SELECT ends_at FROM silences WHERE id = ?",
                              (silence_id,)).fetchone()
        if row is None:
            raise ConfigError(f"no silence {silence_id}")
        if row[0] <= now:
            raise ConfigError(f"silence {silence_id} has already ended")
        self.db.execute("UPDATE silences SET ends_at = ? WHERE id = ?", (now, silence_id))

    def active(self) -> list[Silence]:
        now = self.clock()
        rows = self.db.execute("SELECT id, matchers, starts_at, ends_at, comment FROM silences "
                               "WHERE ends_at > ? ORDER BY id", (now,)).fetchall()
        return [Silence(i, tuple(Matcher(*m) for m in orjson.loads(ms)), s, e, c)
                for i, ms, s, e, c in rows]

    def silenced_by(self, labels: Mapping[str, str]) -> Silence | None:
        now = self.clock()
        return next((s for s in self.active() if s.matches(labels, now)), None)

    def close(self) -> None:
        self.db.close()
