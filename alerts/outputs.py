"""Where alert notifications go before robots are configured: the console and JSON Lines."""

from __future__ import annotations

import sys
import threading
from typing import Protocol, TextIO

import orjson

from orderwatch.alerts.notification import console_line, to_record
from orderwatch.detectors.base import Alert


class Notifier(Protocol):
    def send(self, alert: Alert) -> None: ...

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

    def close(self) -> None:
        """Nothing to release: stdout belongs to the process."""


class JsonlNotifier:
    """Every notification as one JSON object per line (the `--alerts-out` file)."""

    def __init__(self, path: str, tz: str = "Asia/Shanghai") -> None:
        self.tz = tz
        self.file = open(path, "ab")  # noqa: SIM115 - closed by close()
        self._lock = threading.Lock()

    def send(self, alert: Alert) -> None:
        line = orjson.dumps(to_record(alert, self.tz)) + b"\n"
        with self._lock:
            self.file.write(line)

    def close(self) -> None:
        with self._lock:
            self.file.close()
