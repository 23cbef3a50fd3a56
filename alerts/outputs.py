"""Where alert notifications go before robots are configured: the console and JSON Lines."""

from __future__ import annotations

import os
import sys
import threading
from typing import Protocol, TextIO

import orjson

from orderwatch.alerts.notification import console_line, notification_key, to_record
from orderwatch.detectors.base import Alert
from orderwatch.timestamps import from_rfc3339


class Notifier(Protocol):
    def send(self, alert: Alert) -> None: ...

    def flush(self) -> None:
        """Make everything sent so far durable (called at every Bytewax epoch end)."""

    def close(self) -> None: ...


class ConsoleNotifier:
    """One readable line per notification on stdout."""

    def __init__(self, tz: str = "Asia/Shanghai", stream: TextIO | None = None) -> None:
        self.tz = tz
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()

    def send(self, alert: Alert) -> None:
        with self._lock:
            print(console_line(alert, self.tz), file=self.stream, flush=True)

    def flush(self) -> None:
        """Every line is flushed as it is printed."""

    def close(self) -> None:
        """Nothing to release: stdout belongs to the process."""


class JsonlNotifier:
    """Every notification as one JSON object per line (the `--alerts-out` file).

    Appends, and skips notifications already in the file: after a restart from a recovery
    snapshot the dataflow re-emits the alerts of the interrupted epoch, and the log must
    still hold each one once.
    """

    def __init__(self, path: str, tz: str = "Asia/Shanghai") -> None:
        self.tz = tz
        self.written = self._keys_in(path)
        self.file = open(path, "ab")  # noqa: SIM115 - closed by close()
        self._lock = threading.Lock()

    @staticmethod
    def _keys_in(path: str) -> set[str]:
        if not os.path.exists(path):
            return set()
        with open(path, "rb+") as f:
            text = f.read()
            if text and not text.endswith(b"\n"):  # cut short by a crash: it comes again
                f.truncate(text.rfind(b"\n") + 1)
        keys = set()
        for line in text.splitlines():
            try:
                r = orjson.loads(line)
                keys.add(notification_key(r["fingerprint"], r["status"],
                                          from_rfc3339(r["starts_at"])))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
        return keys

    def send(self, alert: Alert) -> None:
        key = notification_key(alert.fingerprint, alert.status, alert.starts_at)
        line = orjson.dumps(to_record(alert, self.tz)) + b"\n"
        with self._lock:
            if key in self.written:
                return
            self.written.add(key)
            self.file.write(line)

    def flush(self) -> None:
        with self._lock:
            self.file.flush()

    def close(self) -> None:
        with self._lock:
            self.file.close()
