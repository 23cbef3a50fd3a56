"""`simulate --rate`: live traffic to Kafka keeps to the wall clock (the compose demo)."""

from __future__ import annotations

import signal
import subprocess
import time

import orjson
from confluent_kafka import TIMESTAMP_CREATE_TIME, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from test_kafka import broker  # noqa: F401  (this module's own broker and topics)

from orderwatch.timestamps import from_rfc3339

from conftest import orderwatch, orderwatch_exe


def read_all(brokers: str, topics: tuple[str, ...]) -> list[tuple[float, dict]]:
    """(when the producer sent it, event) of every message on the topics."""
    metadata = AdminClient({"bootstrap.servers": brokers}).list_topics(timeout=10)
    reader = Consumer({"bootstrap.servers": brokers, "group.id": "t",
                       "enable.partition.eof": True, "auto.offset.reset": "earliest"})
    parts = [TopicPartition(t, p, 0) for t in topics for p in metadata.topics[t].partitions]
    reader.assign(parts)
    got, ended, deadline = [], 0, time.monotonic() + 30
    while ended < len(parts) and time.monotonic() < deadline:
        message = reader.poll(1.0)
        if message is None:
            continue
        if message.error():
            ended += 1  # the end of a partition
            continue
        kind, ms = message.timestamp()
        assert kind == TIMESTAMP_CREATE_TIME
        got.append((ms / 1000, orjson.loads(message.value())))
    reader.close()
    assert ended == len(parts)
    return got


def event_time(event: dict) -> float | None:
    try:
        return from_rfc3339(event["occurred_at"])
    except (KeyError, TypeError, ValueError):  # the bad timestamps the engine injects
        return None


def test_live_traffic_is_in_wall_clock_time(broker):  # noqa: F811
    """It used to publish EPS events a second of an engine running 60 orders a minute of
    event time: at the compose demo's --rate 500, event time ran 39 times faster than
    the clock, so a consumer's bound on the clock (1 h) dead-lettered the demo after 90 s,
    and Grafana's last hours showed only its first minutes."""
    proc = subprocess.Popen([orderwatch_exe(), "simulate", "--brokers", broker, "--rate",
                             "300", "--faults", "all", "--seed", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    banner = proc.stdout.readline()
    assert "about 300 events/s (1,423 orders a minute) in wall-clock time" in banner
    time.sleep(8)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    events = read_all(broker, ("orders", "callbacks", "logistics"))
    assert f"published {len(events):,} events" in out
    # 1,423 orders a minute make about 24 creations a second, then their payments and
    # callbacks; the rest of their lives (days) would follow
    assert len(events) > 8 * 20
    # each was sent once the clock had reached its event time (CreateTime is in ms), and
    # most within a second of it (the engine's late and redelivered copies come later)
    lags = sorted(sent - at for sent, event in events if (at := event_time(event)))
    assert lags[0] >= -0.001
    assert lags[len(lags) // 2] < 1.0


def test_rate_and_orders_per_minute_are_one_setting_in_live_mode():
    result = orderwatch("simulate", "--brokers", "127.0.0.1:9", "--rate", "100",
                        "--orders-per-minute", "60")
    assert result.returncode == 2
    assert "give --rate or --orders-per-minute" in result.stderr
