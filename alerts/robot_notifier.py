"""OrderWatch's own alerts to the robots: a `Notifier` that routes and queues them.

The dataflow hands every alert transition to `send()`; routing picks the robots, the
outbox stores the notice and a background worker delivers it (see `outbox.py`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from orderwatch.alerts.dispatch import Dispatcher
from orderwatch.alerts.notice import from_alert
from orderwatch.alerts.outbox import Outbox, OutboxWorker
from orderwatch.alerts.robot_config import RobotsConfig
from orderwatch.alerts.robots import Robot
from orderwatch.alerts.silences import Silences
from orderwatch.detectors.base import Alert

log = logging.getLogger(__name__)


class RobotNotifier:
    def __init__(self, config: RobotsConfig, state_dir: str | Path,
                 tz: str = "Asia/Shanghai") -> None:
        self.config = config
        robots = {name: Robot(c, tz) for name, c in config.robots.items()}
        self.outbox = Outbox(Path(state_dir) / "outbox.sqlite3", robots)
        self.silences = Silences(Path(state_dir) / "silences.sqlite3")
        self.dispatcher = Dispatcher(config, self.outbox, self.silences)
        self.worker = OutboxWorker(self.outbox)
        self.worker.start()

    def send(self, alert: Alert) -> None:
        self.dispatcher.offer(from_alert(alert))
        self.worker.wake()

    def flush(self) -> None:
        """Every notice is committed to the outbox as it is queued."""

    def close(self) -> None:
        self.worker.stop()
        left = self.outbox.pending()
        if left:
            log.warning("%d robot notifications still queued; they go out on the next start",
                        left)
        self.outbox.close()
        self.silences.close()
