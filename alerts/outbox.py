"""Robot delivery that loses nothing: a SQLite outbox, 20 messages a minute, digests, retries.

Every notice for a robot is stored before anything is sent, keyed by its identity, so a
notice offered twice (a resumed dataflow, Alertmanager retrying) is kept once. `pump()`
sends what is pending: as few messages as the robot's size limit allows (a digest), at
most 20 per robot per sliding minute (the window is stored too, so a restart does not
burst). A throttled, busy, 5xx or timed-out robot is retried with exponential backoff up
to a minute, indefinitely; a notice is marked sent only once the robot answered errcode 0.
`pump()` takes its time from `clock`, so tests drive it without waiting.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx
import orjson

from orderwatch.alerts.message_text import pack
from orderwatch.alerts.notice import Notice
from orderwatch.alerts.robots import PER_MINUTE, Outcome, Robot, classify

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS notices (
    robot TEXT NOT NULL, key TEXT NOT NULL, body BLOB NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',  -- pending | sent | failed
    enqueued_at REAL NOT NULL, sent_at REAL, detail TEXT,
    PRIMARY KEY (robot, key));
CREATE INDEX IF NOT EXISTS pending ON notices (robot, state, enqueued_at);
CREATE TABLE IF NOT EXISTS sends (robot TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS backoff (robot TEXT PRIMARY KEY, failures INTEGER NOT NULL,
                                    next_try_at REAL NOT NULL);
"""
WINDOW_S = 60.0
MAX_BACKOFF_S = 60.0


class Outbox:
    def __init__(self, path: str | Path, robots: Mapping[str, Robot],
                 client: httpx.Client | None = None, clock: Callable[[], float] = time.time,
                 per_minute: int = PER_MINUTE) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        self.robots = dict(robots)
        self.client = client or httpx.Client(timeout=10.0)
        self.clock = clock
        self.per_minute = per_minute
        self.lock = threading.RLock()  # the database; never held across an HTTP request
        self._sending: dict[str, threading.Lock] = {}  # one pump per robot at a time

    def enqueue(self, robot: str, notice: Notice) -> bool:
        """Store a notice for a robot; False when it was already there."""
        with self.lock:
            cursor = self.db.execute(
                "INSERT OR IGNORE INTO notices (robot, key, body, enqueued_at) VALUES (?,?,?,?)",
                (robot, notice.key, orjson.dumps(notice.to_json()), self.clock()))
            return cursor.rowcount == 1

    def withdraw(self, robot: str, keys: list[str]) -> None:
        """Forget pending notices (the relay hands a failed batch back to Alertmanager)."""
        with self.lock:
            self.db.executemany("DELETE FROM notices WHERE robot=? AND key=? AND state='pending'",
                                [(robot, k) for k in keys])

    def pending(self, robot: str | None = None) -> int:
        sql = "SELECT count() FROM notices WHERE state='pending'"
        args: tuple = ()
        if robot is not None:
            sql, args = sql + " AND robot=?", (robot,)
        with self.lock:
            return self.db.execute(sql, args).fetchone()[0]

    def state_of(self, robot: str, key: str) -> str | None:
        with self.lock:
            row = self.db.execute("SELECT state FROM notices WHERE robot=? AND key=?",
                                  (robot, key)).fetchone()
        return row[0] if row else None

    def backing_off(self, robot: str) -> bool:
        """Did the robot's last attempt fail transiently (and is it waiting to retry)?"""
        with self.lock:
            return self.db.execute("SELECT 1 FROM backoff WHERE robot=?",
                                   (robot,)).fetchone() is not None

    def pump(self) -> float | None:
        """Send what may be sent now; seconds until the next pump is useful (None: idle)."""
        waits = [w for w in (self.pump_robot(name) for name in self.robots) if w is not None]
        return min(waits) if waits else None

    def pump_robot(self, name: str) -> float | None:
        """Send one robot's due messages. Enqueueing goes on meanwhile: the database lock
        is taken per statement, never across a request to the robot."""
        robot = self.robots[name]
        with self.lock:
            sending = self._sending.setdefault(name, threading.Lock())
        with sending:
            with self.lock:
                now = self.clock()
                pending = self._pending_notices(name)
                if not pending:
                    return None
                row = self.db.execute("SELECT failures, next_try_at FROM backoff WHERE robot=?",
                                      (name,)).fetchone()
                if row and row[1] > now:
                    return row[1] - now
                self.db.execute("DELETE FROM sends WHERE at <= ?", (now - WINDOW_S,))
                recent = [r[0] for r in self.db.execute(
                    "SELECT at FROM sends WHERE robot=? ORDER BY at", (name,))]
            budget = self.per_minute - len(recent)
            if budget <= 0:
                return recent[0] + WINDOW_S - now
            for group in pack(pending, robot.fits)[:budget]:
                outcome = self._send(robot, group)
                if not outcome.ok:
                    return self._failed(name, group, outcome, row[0] if row else 0)
            with self.lock:
                self.db.execute("DELETE FROM backoff WHERE robot=?", (name,))
                return 0.0 if self._pending_notices(name) else None

    def _pending_notices(self, name: str) -> list[Notice]:
        rows = self.db.execute("SELECT body FROM notices WHERE robot=? AND state='pending' "
                               "ORDER BY enqueued_at, rowid", (name,)).fetchall()
        return [Notice.from_json(orjson.loads(body)) for (body,) in rows]

    def _send(self, robot: Robot, group: list[Notice]) -> Outcome:
        payload = robot.payload(group)
        now = self.clock()
        with self.lock:
            self.db.execute("INSERT INTO sends (robot, at) VALUES (?, ?)", (robot.name, now))
        try:
            response = self.client.post(robot.url(int(now * 1000)), content=orjson.dumps(payload),
                                        headers={"Content-Type": "application/json"})
            outcome = classify(response.status_code, response.content)
        except httpx.HTTPError as exc:  # time-outs and refused connections: try again
            outcome = Outcome(False, True, type(exc).__name__)
        if outcome.ok:
            with self.lock:
                self.db.executemany(
                    "UPDATE notices SET state='sent', sent_at=? WHERE robot=? AND key=?",
                    [(now, robot.name, n.key) for n in group])
        return outcome

    def _failed(self, name: str, group: list[Notice], outcome: Outcome, failures: int
                ) -> float:
        if not outcome.retry:  # the robot refuses this message: keep it, marked, and go on
            log.error("robot %s refused a message of %d notices (%s)", name, len(group),
                      outcome.detail)
            with self.lock:
                self.db.executemany("UPDATE notices SET state='failed', detail=? "
                                    "WHERE robot=? AND key=?",
                                    [(outcome.detail, name, n.key) for n in group])
            return 0.0
        delay = min(MAX_BACKOFF_S, 2.0 ** failures)
        log.warning("robot %s: %s; retrying in %.0f s (%d pending)", name, outcome.detail,
                    delay, self.pending(name))
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO backoff VALUES (?, ?, ?)",
                            (name, failures + 1, self.clock() + delay))
        return delay

    def close(self) -> None:
        with self.lock:
            self.db.close()


class OutboxWorker(threading.Thread):
    """Pumps an outbox in the background: at once when woken, else when something is due."""

    def __init__(self, outbox: Outbox, idle_s: float = 5.0) -> None:
        super().__init__(daemon=True, name="orderwatch-robots")
        self.outbox = outbox
        self.idle_s = idle_s
        self.woken = threading.Event()
        self.stopped = threading.Event()

    def wake(self) -> None:
        self.woken.set()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.woken.clear()
            try:
                wait = self.outbox.pump()
            except Exception:  # a bug must not stop deliveries for good: log, go on
                log.exception("robot delivery failed")
                wait = self.idle_s
            self.woken.wait(self.idle_s if wait is None else max(0.05, wait))

    def stop(self, drain_s: float = 5.0) -> None:
        """Give pending messages a few seconds, then stop; the rest wait in the outbox."""
        deadline = time.monotonic() + drain_s
        while self.outbox.pending() and time.monotonic() < deadline:
            self.wake()
            time.sleep(0.1)
        self.stopped.set()
        self.wake()
        self.join(10)
