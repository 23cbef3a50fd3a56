"""Between an alert and the robots: silences, inhibition, routing.

Inhibition as in Alertmanager, with OrderWatch's rule: while a gateway's
`callback_failure_rate` fires, that gateway's per-order `callback_lost` notices are not
sent one by one; they are marked `inhibited_by` and a message shows them as one line
listing the affected orders (see `message_text.render`). Firing sources are stored with
the outbox, so a restart keeps inhibiting.
"""

from __future__ import annotations

from dataclasses import replace

from orderwatch.alerts.notice import Notice
from orderwatch.alerts.outbox import Outbox
from orderwatch.alerts.robot_config import RobotsConfig
from orderwatch.alerts.silences import Silences

# (source alert, target alert, the label they must share)
INHIBITIONS = (("callback_failure_rate", "callback_lost", "gateway"),)


class Dispatcher:
    def __init__(self, config: RobotsConfig, outbox: Outbox, silences: Silences) -> None:
        self.config = config
        self.outbox = outbox
        self.silences = silences

    def offer(self, notice: Notice) -> str:
        """Route one notice; returns what happened: queued, inhibited or silenced."""
        labels = notice.route_labels
        if self.silences.silenced_by(labels) is not None:
            return "silenced"
        self._track_source(notice)
        inhibitor = self._inhibitor_of(notice)
        if inhibitor is not None:
            notice = replace(notice, labels={**notice.labels, "inhibited_by": inhibitor})
        for robot, grouping in self.config.deliveries(labels):
            self.outbox.enqueue(robot.name, notice, grouping)
        return "queued" if inhibitor is None else "inhibited"

    def _track_source(self, notice: Notice) -> None:
        for source, _, label in INHIBITIONS:
            if notice.alert == source and label in notice.labels:
                self.outbox.note_inhibitor(source, label, notice.labels[label],
                                           firing=notice.status == "firing")

    def _inhibitor_of(self, notice: Notice) -> str | None:
        for source, target, label in INHIBITIONS:
            if (notice.alert == target and label in notice.labels
                    and self.outbox.inhibitor_fires(source, label, notice.labels[label])):
                return source
        return None
