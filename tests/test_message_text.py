"""A Chinese robot message says the alert itself in Chinese, not only its frame."""

from __future__ import annotations

import contextlib
import pickle
import re

from test_watermark_and_order_book import drained, replay_in_process

from orderwatch.alerts.message_text import line
from orderwatch.alerts.notice import Notice, from_alert
from orderwatch.detectors.base import Alert
from orderwatch.engine.faults import SCENARIOS
from orderwatch.engine.simulator import SimConfig, Simulator
from orderwatch.events import InvalidEvent, validate

CHINESE = re.compile(r"[\u4e00-\u9fff]")
TZ = "Asia/Shanghai"


def simulated_alerts() -> list[Alert]:
    """Fifty minutes of a shop with every fault, through the order and aggregate shards."""
    sim = Simulator(SimConfig(seed=4, orders=3000, orders_per_minute=60, first_window_at=60,
                              faults=frozenset(SCENARIOS)))
    events = []
    for data in sim.events():
        with contextlib.suppress(InvalidEvent):  # malformed_events: dead letters, elsewhere
            events.append(validate(data))
    chunks = [events[i:i + 500] for i in range(0, len(events), 500)]
    return replay_in_process(drained(chunks))[1]


def test_every_alert_has_its_summary_in_chinese_and_zh_messages_use_it():
    """The frame was Chinese (告警·严重, 支付回调丢失) and the summary English
    ("paid at alipay 10 min ago, order still pending payment")."""
    alerts = simulated_alerts()
    names = {a.alert for a in alerts}
    # the rest of the catalogue (certificate, backlog, anomaly) in the detectors' own tests
    assert len(names) >= 15, names
    for alert in alerts:
        assert CHINESE.search(alert.summary_zh), (alert.alert, alert.summary_zh)
        notice = from_alert(alert)
        zh, en = line(notice, "zh", TZ), line(notice, "en", TZ)
        assert alert.summary_zh in zh and alert.summary not in zh, zh
        assert alert.summary in en and not CHINESE.search(alert.summary), en
    # what left memory says so in Chinese too
    left = [a for a in alerts if a.summary.startswith("the order left")]
    assert all("离开 OrderWatch 内存" in a.summary_zh for a in left)


def test_a_notice_keeps_its_chinese_summary_through_the_outbox_json():
    notice = Notice("k", "callback_lost", "firing", "critical", {"order_no": "T1"}, 0.0, None,
                    "paid at alipay 10 min ago", summary_zh="已在 alipay 支付 10 分钟")
    assert Notice.from_json(notice.to_json()) == notice
    older = notice.to_json()
    del older["summary_zh"]  # queued before summaries had a Chinese one
    assert "paid at alipay" in line(Notice.from_json(older), "zh", TZ)


def test_an_alert_from_an_older_recovery_snapshot_has_no_chinese_summary_and_still_works():
    alert = Alert("stuck_order", "firing", "warning", {"order_no": "T1"}, 0.0, None, 2.0,
                  "in pending_review for 2 h", summary_zh="处于 pending_review 已 2 小时")
    assert pickle.loads(pickle.dumps(alert)) == alert
    state = alert.__getstate__()
    del state[1]["summary_zh"]  # as pickled before the field existed
    old = Alert.__new__(Alert)
    old.__setstate__(state)
    assert old.summary_zh == "" and "in pending_review" in line(from_alert(old), "zh", TZ)
