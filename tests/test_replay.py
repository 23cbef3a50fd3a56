"""End to end through the CLI, as a user runs it: simulate → replay → ClickHouse and alerts."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import orjson
import pytest
from bytewax.recovery import init_db_dir

from orderwatch.config import ConfigError
from orderwatch.engine.faults import SCENARIOS
from orderwatch.engine.scoring import format_table, score
from orderwatch.pipelines.runner import Recovery
from orderwatch.timestamps import from_rfc3339

from conftest import events_counted, free_ports, orderwatch, orderwatch_exe

HEADLINE = ("callback_lost", "callback_failure_rate", "silent_shipment", "lock_ttl_overrun",
            "lock_contention", "duplicate_ship_request", "duplicate_order")
TABLES = ("events", "order_state", "health_metrics", "alerts", "dead_letters", "order_risk")


def read_jsonl(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def counts(dsn: str) -> dict[str, int]:
    query = " UNION ALL ".join(f"SELECT '{t}', count() FROM orderwatch.{t}" for t in TABLES)
    result = orderwatch("sql", "--clickhouse", dsn, query)
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.strip().splitlines()[1:]]
    return {name: int(n) for name, n in rows}


def digests(dsn: str) -> dict[str, tuple[int, int]]:
    """Per table: row count and an order-independent hash of every written column.

    The `dead_letters` series is left out of `health_metrics` and given on its own as
    `dead_letter_series`: (dead letters counted, 0). Only the total is compared: the
    minute a dead letter counts in depends on how the input was cut into chunks, and
    runs differing only in their bad input compare equal on everything else."""
    from orderwatch.pipelines.clickhouse_schema import COLUMNS

    where = {"health_metrics": " WHERE metric != 'dead_letters'"}
    query = " UNION ALL ".join(
        [f"SELECT '{t}', count(), sum(cityHash64({', '.join(COLUMNS[t])})) "
         f"FROM orderwatch.{t}{where.get(t, '')}" for t in TABLES]
        + ["SELECT 'dead_letter_series', toUInt64(sum(value)), 0 FROM "
           "orderwatch.health_metrics FINAL WHERE metric = 'dead_letters'"])
    result = orderwatch("sql", "--clickhouse", dsn, query)
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.strip().splitlines()[1:]]
    return {name: (int(n), int(h)) for name, n, h in rows}


def replay(files: list[Path], dsn: str, alerts: Path) -> str:
    result = orderwatch("replay", *map(str, files), "--clickhouse", dsn,
                        "--alerts-out", str(alerts))
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    """20,000 orders with every fault scenario switched on, replayed once."""
    d = tmp_path_factory.mktemp("faulty")
    sim = orderwatch("simulate", "--out", str(d / "events.jsonl"), "--labels",
                     str(d / "labels.jsonl"), "--orders", "20000", "--faults", "all",
                     "--seed", "11")
    assert sim.returncode == 0, sim.stderr
    dsn = f"chdb://{d / 'ch'}"
    summary = replay([d / "events.jsonl"], dsn, d / "alerts.jsonl")
    return d, dsn, summary


def test_headline_faults_all_found_and_clean_orders_quiet(faulty, capsys):
    d, _, summary = faulty
    labels = read_jsonl(d / "labels.jsonl")
    alerts = read_jsonl(d / "alerts.jsonl")
    result = score(alerts, labels)
    with capsys.disabled():  # the figures belong in every test log, not only on failure
        print("\n" + summary + "\n" + format_table(result))
    for name in HEADLINE:
        q = result[name]
        assert q.labelled > 0, f"the simulation injected no {name}"
        assert q.recall == 1.0, q.as_dict()
        assert q.precision >= 0.99, q.as_dict()
    faulty_orders = {label["order_no"] for label in labels if label["order_no"]}
    events = read_jsonl(d / "events.jsonl")
    clean = {e.get("order_no") for e in events if isinstance(e.get("order_no"), str)}
    clean -= faulty_orders
    noisy = {a["labels"]["order_no"] for a in alerts
             if a["alert"] in HEADLINE and a["labels"].get("order_no") in clean}
    with capsys.disabled():
        print(f"clean orders {len(clean):,}, with a headline alert {len(noisy)}")
    assert len(clean) > 12000 and len(noisy) / len(clean) <= 0.01


CATALOGUE_AGGREGATE = ("callback_failure_rate", "callback_cert_expired", "lock_contention",
                       "pending_payment_backlog", "channel_degraded")


def test_the_whole_catalogue_and_the_risk_score_on_an_unseen_seed(faulty, capsys):
    """Seed 11 was not used to train the risk model (benchmarks/detection.py runs three)."""
    from sklearn.metrics import roc_auc_score

    d, dsn, _ = faulty
    labels = read_jsonl(d / "labels.jsonl")
    result = score(read_jsonl(d / "alerts.jsonl"), labels)
    expected = set(HEADLINE) | set(CATALOGUE_AGGREGATE) | {
        "timezone_skew", "premature_timeout_cancel", "illegal_transition", "status_flapping",
        "stuck_order", "settlement_missing", "order_risk_high"}
    assert expected <= set(result)
    for name in expected:
        q = result[name]
        floor = 0.95 if name in CATALOGUE_AGGREGATE else 0.98
        assert q.precision >= 0.98 and q.recall >= floor, q.as_dict()
    risk = orderwatch("sql", "--clickhouse", dsn,
                      "SELECT order_no, max_risk FROM orderwatch.order_risk FINAL")
    max_risk = {line.split("\t")[0]: float(line.split("\t")[1])
                for line in risk.stdout.strip().splitlines()[1:]}
    broken = {label["order_no"] for label in labels if label["fault"] == "order_risk_high"}
    auc = roc_auc_score([o in broken for o in max_risk], list(max_risk.values()))
    with capsys.disabled():
        print(f"risk score: {len(max_risk):,} orders, {len(broken):,} broken, ROC AUC {auc:.4f}")
    assert len(max_risk) == 20_000 and auc >= 0.95


def test_every_alert_notification_has_the_contract_shape(faulty):
    d, _, _ = faulty
    for alert in read_jsonl(d / "alerts.jsonl")[:2000]:
        assert {"alert", "status", "severity", "labels", "starts_at", "ends_at", "value",
                "summary"} <= set(alert)
        assert alert["status"] in ("firing", "resolved")
        assert (alert["ends_at"] is None) == (alert["status"] == "firing")
        assert "order_no" in alert["labels"] or set(alert["labels"]) & {
            "gateway", "carrier", "channel", "warehouse", "lock_family"}


def test_replaying_the_same_file_twice_changes_no_count(faulty):
    d, dsn, _ = faulty
    before = counts(dsn)
    assert before["events"] > 250_000 and before["order_state"] == 20_000
    assert all(before[t] > 0 for t in ("health_metrics", "alerts"))
    # every event counts in a minute of the health series, those of the last minute too
    result = orderwatch("sql", "--clickhouse", dsn, "SELECT toUInt64(sum(value)) FROM "
                        "orderwatch.health_metrics FINAL WHERE metric = 'events'")
    assert int(result.stdout.split()[-1]) == before["events"]
    digested = digests(dsn)
    replay([d / "events.jsonl"], dsn, d / "alerts-again.jsonl")
    assert counts(dsn) == before
    assert digests(dsn) == digested
    assert sorted(read_jsonl(d / "alerts.jsonl"), key=json.dumps) == \
        sorted(read_jsonl(d / "alerts-again.jsonl"), key=json.dumps)


BAD_LINES = [
    b"this is not json",
    b'{"event_id": "x1", "stream": "order"',
    b'{"stream":"order","order_no":"O1","occurred_at":"2026-02-23T10:00:00+08:00"}',
    b'{"event_id":"x2","stream":"order","order_no":"O1","occurred_at":"2026-02-23T10:00:00+08:00",'
    b'"action":"pay","result":"ok","status":"paid","source":"oms","request_id":7}',
    b'{"event_id":"x3","stream":"order","order_no":"O1","occurred_at":"2026-02-23T10:00:00+08:00",'
    b'"action":"teleport","result":"ok","status":"paid","source":"oms"}',
    b'{"event_id":"x4","stream":"logistics","order_no":"O1","occurred_at":"yesterday",'
    b'"carrier":"SF","waybill_no":"W","event":"picked_up"}',
    b'{"event_id":"x5","stream":"logistics","order_no":"O1","occurred_at":"2026-02-23T10:00:00",'
    b'"carrier":"SF","waybill_no":"W","event":"picked_up"}',
    b"[1, 2, 3]",
    b"\xff\xfe\x00 not utf-8",
    b'{"event_id":"x6","stream":"logistics","order_no":"O1","occurred_at":"2026-02-23T10:00:00Z",'
    b'"carrier":"SF","waybill_no":"W","event":"picked_up","pad":"' + b"x" * (10 << 20) + b'"}',
    # valid but for a year no health-metric minute can hold: 1960 failed every insert of
    # its minute until Bytewax aborted the replay
    b'{"event_id":"x7","stream":"logistics","order_no":"O1","occurred_at":"1960-02-23T10:00:00Z",'
    b'"carrier":"SF","waybill_no":"W","event":"picked_up"}',
    b'{"event_id":"x8","stream":"logistics","order_no":"O1","occurred_at":"2200-02-23T10:00:00Z",'
    b'"carrier":"SF","waybill_no":"W","event":"picked_up"}',
]


def test_salted_file_dead_letters_every_bad_line_and_processes_every_good_one(tmp_path):
    faults = ",".join(name for name in SCENARIOS if name != "malformed_events")
    sim = orderwatch("simulate", "--out", str(tmp_path / "clean.jsonl"), "--orders", "800",
                     "--faults", faults, "--seed", "3")
    assert sim.returncode == 0, sim.stderr
    good = (tmp_path / "clean.jsonl").read_bytes().splitlines()
    lines = list(good)
    rng = random.Random(9)
    for bad in BAD_LINES[1:]:
        lines.insert(rng.randrange(len(lines)), bad)
    lines.append(BAD_LINES[0])  # after the last event: it counts in the last minute
    bad_positions = {i + 1 for i, line in enumerate(lines) if line in BAD_LINES}
    (tmp_path / "salted.jsonl").write_bytes(b"\n".join(lines) + b"\n")

    salted_dsn = f"chdb://{tmp_path / 'salted-ch'}"
    summary = replay([tmp_path / "salted.jsonl"], salted_dsn, tmp_path / "salted-alerts.jsonl")
    assert f"dead letters       {len(BAD_LINES)}" in summary
    result = orderwatch("sql", "--clickhouse", salted_dsn,
                        "SELECT position, length(payload), reason FROM orderwatch.dead_letters "
                        "ORDER BY position")
    rows = [line.split("\t") for line in result.stdout.strip().splitlines()[1:]]
    assert {int(r[0]) for r in rows} == bad_positions
    assert all(r[2] for r in rows), "every dead letter says why"
    assert max(int(r[1]) for r in rows) > 10 << 20, "the 10 MB line is kept whole"
    reasons = " | ".join(r[2] for r in rows)
    for expected in ("not JSON", "missing required field", "must be a string",
                     "unknown value 'teleport'", "bad timestamp", "not a JSON object",
                     "exceeds the", "outside the years 1970 to 2099"):
        assert expected in reasons

    clean_dsn = f"chdb://{tmp_path / 'clean-ch'}"
    replay([tmp_path / "clean.jsonl"], clean_dsn, tmp_path / "clean-alerts.jsonl")
    salted, clean = digests(salted_dsn), digests(clean_dsn)
    assert salted["dead_letters"][0] == len(BAD_LINES) and clean["dead_letters"][0] == 0
    assert salted["dead_letter_series"][0] == len(BAD_LINES)  # a per-minute count of them
    assert clean["dead_letter_series"] == (0, 0)
    same = [t for t in TABLES if t != "dead_letters"]
    assert {t: salted[t] for t in same} == {t: clean[t] for t in same}
    assert sorted(read_jsonl(tmp_path / "salted-alerts.jsonl"), key=json.dumps) == \
        sorted(read_jsonl(tmp_path / "clean-alerts.jsonl"), key=json.dumps)


def test_streams_split_over_files_give_the_same_results(tmp_path):
    sim = orderwatch("simulate", "--out", str(tmp_path / "all.jsonl"), "--orders", "3000",
                     "--faults", "all", "--seed", "21")
    assert sim.returncode == 0, sim.stderr
    files = {s: (tmp_path / f"{s}.jsonl").open("wb") for s in ("order", "callback", "logistics")}
    for line in (tmp_path / "all.jsonl").read_bytes().splitlines():
        files[orjson.loads(line)["stream"]].write(line + b"\n")
    for f in files.values():
        f.close()
    replay([tmp_path / "all.jsonl"], f"chdb://{tmp_path / 'one'}", tmp_path / "one.jsonl")
    replay([tmp_path / f"{s}.jsonl" for s in files], f"chdb://{tmp_path / 'three'}",
           tmp_path / "three.jsonl")
    one, three = read_jsonl(tmp_path / "one.jsonl"), read_jsonl(tmp_path / "three.jsonl")
    assert len(one) > 100
    assert sorted(one, key=json.dumps) == sorted(three, key=json.dumps)
    got, want = digests(f"chdb://{tmp_path / 'three'}"), digests(f"chdb://{tmp_path / 'one'}")
    dead_letters = "dead_letters"  # their ids name the file and line, which differ
    assert {t: v for t, v in got.items() if t != dead_letters} == \
        {t: v for t, v in want.items() if t != dead_letters}
    assert got[dead_letters][0] == want[dead_letters][0]


def _event(eid: str, t: str, **fields) -> bytes:
    return orjson.dumps({"event_id": eid, "order_no": "ORD1", "occurred_at": t, **fields})


def test_timeouts_fire_up_to_the_last_event_time_and_none_later(tmp_path):
    create = _event("c", "2026-02-23T10:00:00+08:00", stream="order", action="create",
                    result="ok", status="pending_payment", source="oms", user_id="U",
                    channel="web", amount=1.0, items=[{"sku": "A", "qty": 1}],
                    grace_period_s=172800)
    paid = _event("n", "2026-02-23T10:01:00+08:00", stream="callback", gateway="alipay",
                  kind="notify", trade_status="SUCCESS", paid_at="2026-02-23T10:01:00+08:00",
                  http_status=403, signature_valid=True)
    other = "ORD2"

    def tick(t: str) -> bytes:  # another order's event: only moves event time on
        return orjson.dumps({"event_id": "t" + t, "order_no": other, "occurred_at": t,
                             "stream": "logistics", "carrier": "SF", "waybill_no": "W",
                             "event": "in_transit"})

    inside = tmp_path / "inside.jsonl"
    inside.write_bytes(b"\n".join([create, paid, tick("2026-02-23T10:10:59+08:00")]) + b"\n")
    replay([inside], f"chdb://{tmp_path / 'a'}", tmp_path / "a.jsonl")
    assert [a for a in read_jsonl(tmp_path / "a.jsonl") if a["alert"] == "callback_lost"] == []

    due = tmp_path / "due.jsonl"
    due.write_bytes(b"\n".join([create, paid, tick("2026-02-23T10:11:00+08:00")]) + b"\n")
    replay([due], f"chdb://{tmp_path / 'b'}", tmp_path / "b.jsonl")
    fired = [a for a in read_jsonl(tmp_path / "b.jsonl") if a["alert"] == "callback_lost"]
    assert [(a["status"], a["starts_at"]) for a in fired] == [
        ("firing", "2026-02-23T10:11:00+08:00")]


def test_events_after_their_minute_was_written_are_counted_as_late_events(tmp_path):
    """A backfill an hour behind the rest: its events are stored and applied, and since
    their minutes of health_metrics are final, counted as late_events in the open one."""
    def scan(eid: str, t: str) -> bytes:
        return orjson.dumps({"event_id": eid, "order_no": "O" + eid, "occurred_at": t,
                             "stream": "logistics", "carrier": "SF", "waybill_no": "W",
                             "event": "in_transit"})

    lines = [scan(f"now{m}", f"2026-02-23T11:{m:02}:00+08:00") for m in range(30)]
    lines[20:20] = [scan(f"old{m}", f"2026-02-23T10:{m:02}:30+08:00") for m in range(5)]
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(lines) + b"\n")
    dsn = f"chdb://{tmp_path / 'ch'}"
    result = orderwatch("replay", str(events), "--clickhouse", dsn, "--alerts-out",
                        str(tmp_path / "alerts.jsonl"),
                        env={"ORDERWATCH_PIPELINE_SOURCE_BATCH_SIZE": "10"})  # 20 lines first
    assert result.returncode == 0, result.stderr
    assert "late events        5 after their minute was final" in result.stdout
    result = orderwatch("sql", "--clickhouse", dsn, """
        SELECT metric, toUInt64(sum(value)) FROM orderwatch.health_metrics FINAL
        WHERE metric IN ('events', 'late_events') GROUP BY metric ORDER BY metric""")
    assert result.stdout.split("\n")[1:3] == ["events\t30", "late_events\t5"]
    assert counts(dsn)["events"] == 35


def test_orders_met_midway_raise_nothing_on_clean_traffic(tmp_path):
    """Switched on in a shop that has traded for ten days, OrderWatch first meets most
    orders midway (paid, shipped, delivered) and must not mistake the history it never
    saw for a fault. At ten orders a minute, two of the engine's one-in-a-thousand
    transient notify timeouts in one 5-minute window of ~20 callbacks legitimately fire
    `callback_failure_rate` on some seeds (seed 5 does, at 00:06); seed 6 has none."""
    from orderwatch.engine.simulator import SimConfig, Simulator
    from orderwatch.timestamps import from_rfc3339

    sim = Simulator(SimConfig(seed=6, orders=None, orders_per_minute=10.0,
                              record_labels=False, warm_up=10 * 86400.0))
    sim.warm_up()
    end = sim.cfg.start + 8 * 3600
    events = []
    for event in sim.events():
        if from_rfc3339(event["occurred_at"]) >= end:
            break
        events.append(event)
    events += sim.undelivered()
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    created = {e["order_no"] for e in events if e.get("action") == "create"}
    assert len({e["order_no"] for e in events}) > 4 * len(created)

    replay([path], f"chdb://{tmp_path / 'ch'}", tmp_path / "alerts.jsonl")
    assert read_jsonl(tmp_path / "alerts.jsonl") == []


def test_two_processes_replaying_one_file_decode_a_stripe_each_and_give_what_one_gives(
        tmp_path):
    """Each process decodes every other block of lines of the file (its stripe), so both
    count dead letters; the tables, dead letters included, and the alerts are one
    process's."""
    sim = orderwatch("simulate", "--out", str(tmp_path / "clean.jsonl"), "--orders", "3000",
                     "--faults", "all", "--seed", "23")
    assert sim.returncode == 0, sim.stderr
    lines = (tmp_path / "clean.jsonl").read_bytes().splitlines()
    for k in range(1, 9):  # one bad line in each eighth of the file
        lines.insert(k * len(lines) // 9, BAD_LINES[k % 3])
    (tmp_path / "salted.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    one = f"chdb://{tmp_path / 'one'}"
    summary = replay([tmp_path / "salted.jsonl"], one, tmp_path / "one.jsonl")

    addresses = ";".join(f"127.0.0.1:{port}" for port in free_ports(2))
    procs = [subprocess.Popen(
        [orderwatch_exe(), "replay", str(tmp_path / "salted.jsonl"), "--clickhouse",
         f"chdb://{tmp_path / 'two'}", "--alerts-out", str(tmp_path / f"two-{i}.jsonl"),
         "-a", addresses, "-i", str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True) for i in (0, 1)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
    dead = [int(re.search(r"dead letters +([\d,]+)", out)[1]) for out, _ in outputs]
    # both decoded part of the file (the simulation's own malformed events among them)
    assert sum(dead) == int(re.search(r"dead letters +([\d,]+)", summary)[1]) > 8
    assert min(dead) > 0, dead
    # the other process writes no tables and sends no alerts: its summary says who does
    other = outputs[1][0]
    assert "clickhouse         written by process 0, the leader" in other, other
    assert "alerts             sent by process 0, the leader" in other, other
    assert "database orderwatch" in outputs[0][0] and "sent by" not in outputs[0][0]
    assert not (tmp_path / "two-1.jsonl").exists()
    assert digests(f"chdb://{tmp_path / 'two'}") == digests(one)
    assert sorted(read_jsonl(tmp_path / "two-0.jsonl"), key=json.dumps) == \
        sorted(read_jsonl(tmp_path / "one.jsonl"), key=json.dumps)


def test_a_replay_killed_midway_resumes_with_more_workers_to_the_same_results(faulty,
                                                                              tmp_path):
    """Bytewax keeps each file stripe's read position under the stripe's name, and the
    stripes are one per worker: a resume with another worker count listed other stripes
    and Bytewax panicked. The directory now keeps the stripes it started with, the lines
    in their blocks (the first run reads blocks of 200, the resume's default is 2,000:
    the two stripes' positions skipped and repeated lines) and the shards' placement."""
    d, dsn, summary = faulty
    total = int(re.search(r"events processed +([\d,]+)", summary)[1].replace(",", ""))
    # a snapshot pickles every open order (16 shards, each woken by every batch), so at
    # -s 0.2 pickling took 2/3 of the run and 40% took 264 s alone, over 300 s in CI;
    # at -s 1 it takes about 70 s and there are still dozens of snapshots before the kill
    recovery = ["-r", str(tmp_path / "recovery"), "-s", "1"]
    args = [orderwatch_exe(), "replay", str(d / "events.jsonl"), "--clickhouse",
            f"chdb://{tmp_path / 'ch'}", "--alerts-out", str(tmp_path / "alerts.jsonl"),
            *recovery]
    port = free_ports(1)[0]
    first = subprocess.Popen([*args, "--metrics", "-w", "2"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE,
                             env={**os.environ, "ORDERWATCH_METRICS_PORT": str(port),
                                  "ORDERWATCH_PIPELINE_SOURCE_BATCH_SIZE": "200"})
    try:
        # a bound for a replay that never gets there, not a speed
        deadline = time.monotonic() + 300
        while events_counted(port) < total * 0.4:
            assert first.poll() is None, "the replay finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        exposed = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        pickled = re.search(r'^orderwatch_snapshot_seconds_count\{step="orders"\} (\S+)$',
                            exposed, re.M)
        assert pickled and float(pickled[1]) > 0, exposed  # what the snapshots cost so far
        size = re.search(r"^orderwatch_snapshot_bytes (\S+)$", exposed, re.M)
        assert size and float(size[1]) > 0
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)

    second = subprocess.run([*args, "-w", "3"], capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    resumed = int(re.search(r"events processed +([\d,]+)", second.stdout)[1].replace(",", ""))
    assert 0 < resumed < total  # it went on from a snapshot, not from the beginning
    pickled = re.search(r"snapshots +([\d,]+) shard states pickled in ([\d.]+) s",
                        second.stdout)
    assert pickled and int(pickled[1].replace(",", "")) > 0, second.stdout
    assert "snapshots" not in summary  # a replay without a recovery directory takes none
    assert digests(f"chdb://{tmp_path / 'ch'}") == digests(dsn)
    assert sorted(read_jsonl(tmp_path / "alerts.jsonl"), key=json.dumps) == \
        sorted(read_jsonl(d / "alerts.jsonl"), key=json.dumps)


def test_a_recovery_directory_keeps_the_layout_of_its_first_snapshots(tmp_path):
    """Until Bytewax has written a snapshot there is nothing to resume, and the run sets
    the layout (a run killed before its first snapshot must not bind the next one)."""
    recovery = Recovery(tmp_path / "recovery")
    assert recovery.replay_layout(["a.jsonl"], 1, 2000) == (1, 2000)
    assert recovery.replay_layout(["b.jsonl"], 2, 200) == (2, 200)
    init_db_dir(recovery.directory, Recovery.PARTITIONS)  # now there are snapshots
    assert recovery.replay_layout(["b.jsonl", "c.jsonl"], 4, 2000) == (2, 200)
    assert recovery.shard_placement(4) == 2  # written with the stripes
    with pytest.raises(ConfigError, match=r"read positions of b\.jsonl"):
        recovery.replay_layout(["c.jsonl"], 2, 200)


def test_a_replay_resumed_on_a_file_that_has_grown_gives_what_one_replay_gives(tmp_path):
    """A file replayed, then grown and replayed again from the recovery directory. The
    first replay's end wrote its last minute as it stood; the resume rewrites it whole."""
    sim = orderwatch("simulate", "--out", str(tmp_path / "all.jsonl"), "--orders", "1500",
                     "--faults", "all", "--seed", "17")
    assert sim.returncode == 0, sim.stderr
    lines = (tmp_path / "all.jsonl").read_bytes().splitlines(keepends=True)
    minute = [_minute_of(line) for line in lines]
    cut = next(i for i in range(len(lines) // 2, len(lines))
               if minute[i] is not None and minute[i - 1] == minute[i])
    grown, dsn = tmp_path / "grown" / "events.jsonl", f"chdb://{tmp_path / 'grown-ch'}"
    grown.parent.mkdir()
    grown.write_bytes(b"".join(lines[:cut]))  # it grows in the minute it ended in
    recovery = ["-r", str(tmp_path / "recovery")]
    first = orderwatch("replay", str(grown), "--clickhouse", dsn, "--alerts-out",
                       str(tmp_path / "first.jsonl"), *recovery)
    assert first.returncode == 0, first.stderr
    with grown.open("ab") as f:
        f.write(b"".join(lines[cut:]))
    second = orderwatch("replay", str(grown), "--clickhouse", dsn, "--alerts-out",
                        str(tmp_path / "second.jsonl"), *recovery)
    assert second.returncode == 0, second.stderr
    whole, whole_dsn = tmp_path / "whole" / "events.jsonl", f"chdb://{tmp_path / 'whole-ch'}"
    whole.parent.mkdir()
    whole.write_bytes(b"".join(lines))
    replay([whole], whole_dsn, tmp_path / "whole.jsonl")
    got, want = digests(dsn), digests(whole_dsn)
    assert {t: got[t] for t in TABLES if t != "dead_letters"} == \
        {t: want[t] for t in TABLES if t != "dead_letters"}
    assert got["dead_letters"][0] == want["dead_letters"][0]
    alerts = read_jsonl(tmp_path / "first.jsonl") + read_jsonl(tmp_path / "second.jsonl")
    assert sorted(alerts, key=json.dumps) == \
        sorted(read_jsonl(tmp_path / "whole.jsonl"), key=json.dumps)


def _minute_of(line: bytes) -> float | None:
    try:
        return from_rfc3339(orjson.loads(line)["occurred_at"]) // 60
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):  # malformed_events
        return None
