"""The command line contract: verbs, flags, exit codes, one-line errors."""

from __future__ import annotations

import gzip
import signal
import subprocess
import sys
import time

import orjson

from conftest import free_port, orderwatch, orderwatch_exe


def test_usage_errors_exit_2_with_one_line():
    for args in (["replay"], ["run", "--rate", "-5"], ["simulate", "--faults", "meteor",
                                                        "--out", "x.jsonl"], ["frobnicate"],
                 ["run", "--rate", "inf"], ["run", "--orders-per-minute", "nan"],
                 ["run", "--warm-start", "-1"]):
        result = orderwatch(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.strip(), args
    for args, said in ((["run", "--duration", "2x"], "such as 90s, 30m or 2h, got '2x'"),
                       (["run", "--rate", "fast"], "must be a number, got 'fast'"),
                       (["simulate", "--orders", "1.5"], "a whole number, got '1.5'"),
                       # 1900 wrote events with Shanghai's LMT offset (+08:05:43), every one
                       # a dead letter; 9999 ended in "error: date value out of range"
                       (["simulate", "--out", "x.jsonl", "--start", "1900-01-01T00:00:00Z"],
                        "between 1971 and 2098"),
                       (["simulate", "--out", "x.jsonl", "--start", "9999-12-31T23:00:00Z"],
                        "between 1971 and 2098"),
                       # its following week overflowed: "error: date value out of range"
                       (["report", "weekly", "--week", "9999-W52"], "1971 to 2098")):
        result = orderwatch(*args)  # was argparse's "invalid parse value: '2x'"
        assert result.returncode == 2 and said in result.stderr, (args, result.stderr)


def test_version_names_orderwatch_and_the_engines_under_it():
    from importlib.metadata import version

    result = orderwatch("--version", env={"COLUMNS": "30"})  # one per line however narrow
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"orderwatch {version('orderwatch')}"
    assert f"  bytewax {version('bytewax')}" in lines and f"  chdb {version('chdb')}" in lines
    assert f"  python {sys.version.split()[0]}" in lines


def test_configuration_errors_exit_2(tmp_path):
    events = tmp_path / "e.jsonl"
    events.write_text("")
    for addresses in ("garbage", "127.0.0.1:2101;127.0.0.1:99999"):  # exit 1 inside Bytewax
        cluster = orderwatch("replay", str(events), "-i", "0", "-a", addresses)
        assert cluster.returncode == 2 and "is not host:port" in cluster.stderr, cluster.stderr
    missing = orderwatch("replay", str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2 and "no such event file" in missing.stderr
    bad_dsn = orderwatch("replay", str(events), "--clickhouse", "mysql://db:3306/x")
    assert bad_dsn.returncode == 2
    assert bad_dsn.stderr.count("\n") == 1 and "unsupported ClickHouse DSN" in bad_dsn.stderr
    bad_env = orderwatch("replay", str(events), env={"ORDERWATCH_METRICS_PORT": "many"})
    assert bad_env.returncode == 2 and "ORDERWATCH_METRICS_PORT" in bad_env.stderr
    folder = orderwatch("replay", str(tmp_path))
    assert folder.returncode == 2 and "is a directory" in folder.stderr
    device = orderwatch("replay", "/dev/null")  # or a pipe, from <(zcat events.jsonl.gz)
    assert device.returncode == 2 and "not a regular file" in device.stderr, device.stderr
    packed = tmp_path / "e.jsonl.gz"  # every line used to become a dead letter
    packed.write_bytes(gzip.compress(b'{"stream": "order"}\n'))
    compressed = orderwatch("replay", str(packed), "--clickhouse", f"chdb://{tmp_path}/gz")
    assert compressed.returncode == 2 and "gzip-compressed" in compressed.stderr
    assert not (tmp_path / "gz").exists(), "refused before anything was written"
    blocked = orderwatch("replay", str(events), "--clickhouse", f"chdb://{events}/ch")
    assert blocked.returncode == 2 and blocked.stderr.count("\n") == 1
    assert "cannot use" in blocked.stderr and "Not a directory" in blocked.stderr
    for args in (["run", "--duration", "2", "--data", str(events)],  # said "File exists"
                 ["silence", "--state", str(events), "list"]):
        in_the_way = orderwatch(*args, timeout=120)
        assert in_the_way.returncode == 2, in_the_way.stderr
        assert f"cannot use {events}" in in_the_way.stderr
        assert "Not a directory" in in_the_way.stderr, in_the_way.stderr


def test_settings_the_dataflow_cannot_use_exit_2_before_it_starts(tmp_path):
    """A batch size or shard count of 0 used to stop the dataflow with a Bytewax panic,
    and a NaN threshold or an unknown time zone ran (the zone failing at the first line
    printed, with exit 1)."""
    events = tmp_path / "e.jsonl"
    made = orderwatch("simulate", "--out", str(events), "--orders", "5", "--seed", "3")
    assert made.returncode == 0, made.stderr
    for name, value in (("ORDERWATCH_PIPELINE_SOURCE_BATCH_SIZE", "0"),
                        ("ORDERWATCH_PIPELINE_ORDER_SHARDS", "0"),
                        ("ORDERWATCH_THRESHOLD_RISK_HIGH", "nan"),
                        ("ORDERWATCH_DISPLAY_TIMEZONE", "Mars/Base")):
        result = orderwatch("replay", str(events), "--clickhouse", f"chdb://{tmp_path / 'ch'}",
                            env={name: value})
        assert result.returncode == 2, (name, result.stderr)
        assert result.stderr.count("\n") == 1 and name in result.stderr, result.stderr


def test_a_recovery_directory_resumed_without_its_files_is_refused_in_one_line(tmp_path):
    """Bytewax panicked on the snapshot of a file no longer listed; say which files the
    directory holds instead."""
    for name in ("a", "b"):
        made = orderwatch("simulate", "--out", str(tmp_path / f"{name}.jsonl"), "--orders",
                          "20", "--seed", "5")
        assert made.returncode == 0, made.stderr
    common = ["--clickhouse", f"chdb://{tmp_path / 'ch'}", "--alerts-out",
              str(tmp_path / "alerts.jsonl"), "-r", str(tmp_path / "recovery")]
    first = orderwatch("replay", str(tmp_path / "a.jsonl"), *common)
    assert first.returncode == 0, first.stderr
    other = orderwatch("replay", str(tmp_path / "b.jsonl"), *common)
    assert other.returncode == 2, other.stderr
    assert other.stderr.count("\n") == 1 and str(tmp_path / "a.jsonl") in other.stderr
    again = orderwatch("replay", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"),
                       *common)  # the same files and a new one: resumed, the new one read
    assert again.returncode == 0, again.stderr


def test_a_path_that_cannot_be_written_exits_2_before_the_work(tmp_path):
    missing = tmp_path / "no-such-dir"
    for args in (["--out", str(missing / "e.jsonl")],
                 ["--out", str(tmp_path / "e.jsonl"), "--labels", str(missing / "l.jsonl")],
                 ["--out", str(tmp_path)]):
        result = orderwatch("simulate", "--orders", "200000", *args)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("orderwatch: cannot use ")
        assert result.stderr.count("\n") == 1 and "Errno" not in result.stderr
    assert (tmp_path / "e.jsonl").read_bytes() == b"", "failed before simulating the orders"


def test_simulate_is_deterministic_and_lists_faults(tmp_path):
    for name in ("a", "b"):
        result = orderwatch("simulate", "--out", str(tmp_path / f"{name}.jsonl"), "--labels",
                            str(tmp_path / f"{name}.labels.jsonl"), "--orders", "200",
                            "--faults", "all", "--seed", "4",
                            "--start", "2026-03-01T00:00:00+08:00")
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    first = orjson.loads((tmp_path / "a.jsonl").read_bytes().splitlines()[0])
    assert first["occurred_at"].startswith("2026-03-01T00:")
    listed = orderwatch("simulate", "--list-faults")
    assert listed.returncode == 0 and "waf_block" in listed.stdout


def test_empty_file_replays_cleanly(tmp_path):
    events = tmp_path / "empty.jsonl"
    events.write_text("\n\n")
    result = orderwatch("replay", str(events), "--clickhouse", f"chdb://{tmp_path / 'ch'}",
                        "--alerts-out", str(tmp_path / "alerts.jsonl"))
    assert result.returncode == 0, result.stderr
    assert "events processed   0" in result.stdout
    assert (tmp_path / "alerts.jsonl").read_text() == ""


def test_simulate_warm_start_sends_orders_already_in_flight(tmp_path):
    out = tmp_path / "warm.jsonl"
    result = orderwatch("simulate", "--out", str(out), "--orders", "50",
                        "--orders-per-minute", "2", "--warm-start", "1", "--seed", "3")
    assert result.returncode == 0, result.stderr
    events = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    created = {e["order_no"] for e in events if e.get("action") == "create"}
    assert len(created) == 50
    assert len({e["order_no"] for e in events}) > 2 * len(created)
    # it said "for 50 orders", of the more than 150 the file holds
    assert f"events for 50 orders and those in flight from 1 day(s) of trading before to {out}" \
        in result.stdout, result.stdout


def test_ctrl_c_during_a_warm_up_stops_cleanly():
    proc = subprocess.Popen(
        [orderwatch_exe(), "simulate", "--rate", "100", "--brokers", "127.0.0.1:9",
         "--warm-start", "10"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)  # 10 days at 474 orders a minute (100 events/s): minutes of warm-up
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_sql_cannot_change_the_embedded_data_with_or_without_a_run_holding_it(tmp_path):
    """Through a running process the query was read-only already; opened directly after the
    run, the same `orderwatch sql` dropped tables."""
    events, dsn = tmp_path / "e.jsonl", f"chdb://{tmp_path / 'ch'}"
    assert orderwatch("simulate", "--out", str(events), "--orders", "5", "--seed", "3"
                      ).returncode == 0
    replayed = orderwatch("replay", str(events), "--clickhouse", dsn, "--alerts-out",
                          str(tmp_path / "alerts.jsonl"))
    assert replayed.returncode == 0, replayed.stderr
    dropped = orderwatch("sql", "--clickhouse", dsn, "DROP TABLE orderwatch.events")
    assert dropped.returncode == 2 and "readonly" in dropped.stderr, dropped.stderr
    assert dropped.stderr.count("\n") == 1
    count = orderwatch("sql", "--clickhouse", dsn, "SELECT count() FROM orderwatch.events")
    assert count.returncode == 0 and int(count.stdout.split()[-1]) > 0, count.stderr
    # the database is OrderWatch's: `FROM events` was "Unknown table … orderwatch.events?"
    bare = orderwatch("sql", "--clickhouse", dsn, "SELECT count() FROM events")
    assert bare.returncode == 0 and bare.stdout == count.stdout, bare.stderr
    outfile = tmp_path / "written-by-query.bin"  # chDB wrote it despite readonly=1
    for query, reason in ((f"SELECT 1 INTO OUTFILE '{outfile}'", "INTO OUTFILE is not"),
                          (f"SELECT 1 INTO /* */ OUTFILE '{outfile}' TRUNCATE", "INTO OUTF"),
                          (f"SELECT $$'$$ INTO OUTFILE '{outfile}' --'", "INTO OUTFILE"),
                          ("SELECT count() FROM orderwatch.events; SELECT 1", "Multi-statements are not"),
                          ("SELECT 1 FORMAT JSON", "leave out the FORMAT clause")):
        refused = orderwatch("sql", "--clickhouse", dsn, query)
        assert refused.returncode == 2 and reason in refused.stderr, (query, refused.stderr)
    assert not outfile.exists()
    unfinished = orderwatch("sql", "--clickhouse", dsn, "SELECT 1 +")
    assert unfinished.returncode == 2 and "SYNTAX_ERROR" in unfinished.stderr
    assert "FORMAT Native" not in unfinished.stderr, "clickhouse-connect's, not the user's"
    assert "formatQuerySingleLine" not in unfinished.stderr, "ours, not the user's"
    for query, answer in (("SELECT 1;", "1"), ("SELECT ';' AS x -- a; b", ";"),
                          ("SELECT 'into outfile FORMAT JSON' AS x", "into outfile FORMAT JSON"),
                          # a tab or line feed in a value is escaped as ClickHouse's TSV does
                          ("SELECT 'a\\tb' AS x, 'l1\\nl2\\\\' AS y", "a\\tb\tl1\\nl2\\\\")):
        allowed = orderwatch("sql", "--clickhouse", dsn, query)
        assert allowed.returncode == 0 and allowed.stdout.splitlines()[-1] == answer, query
    empty = orderwatch("sql", "--clickhouse", dsn, " ")
    assert empty.returncode == 2 and empty.stderr == "orderwatch: the query is empty\n"


def test_embedded_data_open_in_another_process_is_refused_in_one_line(tmp_path):
    """chDB allows one process per data directory; the second used to fail with two lines
    of chDB internals (exit 1), and a weekly report on a directory never written to with
    'Database orderwatch does not exist'."""
    data = tmp_path / "ch"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, clickhouse_connect\n"
         f"client = clickhouse_connect.get_client(dsn='chdb://{data}')\n"
         "client.command('SELECT 1')\nprint('holding', flush=True)\nsys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        events = tmp_path / "e.jsonl"
        events.write_text("")
        busy = orderwatch("replay", str(events), "--clickhouse", f"chdb://{data}")
        assert busy.returncode == 2 and busy.stderr.count("\n") == 1, busy.stderr
        assert "open in another process" in busy.stderr
    finally:
        holder.communicate("", timeout=30)


def test_reading_data_never_written_says_so_and_creates_nothing(tmp_path):
    empty = orderwatch("report", "weekly", "--clickhouse", f"chdb://{tmp_path / 'none'}",
                       "--html", str(tmp_path / "w.html"))
    assert empty.returncode == 2 and "no OrderWatch data" in empty.stderr, empty.stderr
    nowhere = orderwatch("sql", "--clickhouse", f"chdb://{tmp_path / 'none'}", "SELECT 1")
    assert nowhere.returncode == 2 and "no OrderWatch data" in nowhere.stderr, nowhere.stderr
    assert not (tmp_path / "none").exists(), "reading must not create the data directory"


def test_every_command_defaults_to_the_same_embedded_data(tmp_path):
    """`replay` wrote chdb://./data/orderwatch.chdb while `sql`, `report` and `run` used
    ./data itself: a replay and then a query, all on defaults, answered 'Database
    orderwatch does not exist'."""
    assert orderwatch("simulate", "--out", "e.jsonl", "--orders", "5", "--seed", "3",
                      cwd=tmp_path).returncode == 0
    replayed = orderwatch("replay", "e.jsonl", "--alerts-out", "a.jsonl", cwd=tmp_path)
    assert replayed.returncode == 0, replayed.stderr
    count = orderwatch("sql", "SELECT count() FROM orderwatch.events", cwd=tmp_path)
    assert count.returncode == 0 and int(count.stdout.split()[-1]) > 0, count.stderr
    weekly = orderwatch("report", "weekly", "--html", "w.html", cwd=tmp_path)
    assert weekly.returncode == 0, weekly.stderr


def test_every_command_that_reads_or_writes_clickhouse_takes_data_or_clickhouse(tmp_path):
    """`replay e.jsonl --data DIR` was 'unrecognized arguments' while `run`, `sql` and
    `report` took it; and `sql --clickhouse A --data B` read A without a word."""
    assert orderwatch("simulate", "--out", "e.jsonl", "--orders", "5", "--seed", "3",
                      cwd=tmp_path).returncode == 0
    replayed = orderwatch("replay", "e.jsonl", "--data", "ch", "--alerts-out", "a.jsonl",
                          cwd=tmp_path)
    assert replayed.returncode == 0, replayed.stderr
    count = orderwatch("sql", "--data", "ch", "SELECT count() FROM events", cwd=tmp_path)
    assert count.returncode == 0 and int(count.stdout.split()[-1]) > 0, count.stderr
    for verb in (["sql", "SELECT 1"], ["replay", "e.jsonl"], ["report", "weekly"],
                 ["consume", "--brokers", "127.0.0.1:9"]):
        both = orderwatch(*verb, "--data", "ch", "--clickhouse", "chdb://elsewhere",
                          cwd=tmp_path)
        assert both.returncode == 2, (verb, both.stderr)
        assert "not allowed with argument --data" in both.stderr, (verb, both.stderr)


def test_an_output_on_an_input_or_on_another_output_is_refused_before_any_work(tmp_path):
    """`replay e.jsonl --alerts-out e.jsonl` emptied the event file, replayed nothing
    and exited 0."""
    assert orderwatch("simulate", "--out", "e.jsonl", "--orders", "5", "--seed", "3",
                      cwd=tmp_path).returncode == 0
    events = (tmp_path / "e.jsonl").read_bytes()
    (tmp_path / "link.jsonl").hardlink_to(tmp_path / "e.jsonl")
    for command, said in (
            (["replay", "e.jsonl", "--alerts-out", "e.jsonl"], "the event file e.jsonl"),
            (["replay", "e.jsonl", "--alerts-out", "./sub/../link.jsonl"], "the event file"),
            (["simulate", "--out", "s.jsonl", "--labels", "./s.jsonl"], "--out s.jsonl"),
            (["report", "weekly", "--html", "w.html", "--json", "w.html"], "--html w.html")):
        (tmp_path / "sub").mkdir(exist_ok=True)
        refused = orderwatch(*command, cwd=tmp_path)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
        assert f"is also {said}" in refused.stderr, refused.stderr
    assert (tmp_path / "e.jsonl").read_bytes() == events
    assert not (tmp_path / "s.jsonl").exists() and not (tmp_path / "w.html").exists()
    shared = orderwatch("simulate", "--out", "/dev/null", "--labels", "/dev/null",
                        "--orders", "2", cwd=tmp_path)  # a device may take both
    assert shared.returncode == 0, shared.stderr


def test_a_directory_without_orderwatch_data_says_so(tmp_path):
    (tmp_path / "state").mkdir()  # ./data as the robots' state leaves it
    for command in (("sql", "SELECT 1"), ("report", "weekly", "--html", "w.html")):
        result = orderwatch(*command, "--data", str(tmp_path), cwd=tmp_path)
        assert result.returncode == 2 and "no OrderWatch data" in result.stderr, result.stderr


def test_a_clickhouse_server_that_does_not_answer_is_one_line_without_the_password(tmp_path):
    """It used to exit 1 after three lines: urllib3's retry, clickhouse-connect's warning
    and the raw connection-pool error."""
    events = tmp_path / "e.jsonl"
    events.write_text("")
    # a generated password as docker-compose pastes it in: "p@ss/w#rd?x" was read as
    # host "ss", database "w", and "x#y" ended in "error: Port could not be cast" (exit 1)
    for password in ("s3cret", "p@ss/w#rd?x"):
        dsn = f"http://ow:{password}@127.0.0.1:{free_port()}/orderwatch"
        for command in (("sql", "SELECT 1"), ("replay", str(events))):
            result = orderwatch(*command, "--clickhouse", dsn)
            assert result.returncode == 2, result.stderr
            assert result.stderr.count("\n") == 1, result.stderr
            assert "cannot use ClickHouse at http://ow:***@127.0.0.1" in result.stderr
            assert "Connection refused" in result.stderr, result.stderr
            assert "s3cret" not in result.stderr and "ss/" not in result.stderr
            assert "w#rd" not in result.stderr, result.stderr


def test_silences_refuse_what_they_cannot_keep_and_say_when_one_has_ended(tmp_path):
    state = ["silence", "--state", str(tmp_path)]
    forever = orderwatch(*state, "add", "alert=callback_lost", "--duration", "1000000000h",
                         "--comment", "x")  # past the year 9999: exit 1, and kept anyway
    assert forever.returncode == 2 and forever.stderr.count("\n") == 1, forever.stderr
    assert "a silence of 41,666,667 days is too long" in forever.stderr  # not 3.6e+12 s
    blank = orderwatch(*state, "add", "alert=callback_lost", "--comment", " ")
    assert blank.returncode == 2 and "comment" in blank.stderr, blank.stderr
    added = orderwatch(*state, "add", "alert=callback_lost", "--comment", "alipay upgrade")
    assert added.returncode == 0, added.stderr
    listed = orderwatch(*state, "list")  # used to fail on the row the first add kept
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1:] == [
        line for line in listed.stdout.splitlines()[1:] if "alipay upgrade" in line]
    assert len(listed.stdout.splitlines()) == 2
    silence_id = added.stdout.split()[1]
    assert orderwatch(*state, "expire", silence_id).returncode == 0
    again = orderwatch(*state, "expire", silence_id)  # said "silence 1 expired" again
    assert again.returncode == 2 and "already ended" in again.stderr, again.stderr
    assert "no silence 99" in orderwatch(*state, "expire", "99").stderr


def test_a_port_that_cannot_be_listened_on_is_one_line_exit_2(tmp_path):
    import socket

    robots = tmp_path / "robots.yml"
    robots.write_text("robots:\n  ops: {kind: wecom, url_env: OPS_URL}\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        relay = orderwatch("relay", "--robots", str(robots), "--port", port, timeout=60)
        run = orderwatch("run", "--duration", "5", "--data", str(tmp_path / "data"),
                         env={"ORDERWATCH_METRICS_PORT": port}, timeout=120)
    for result in (relay, run):  # were exit 1: "error: [Errno 98] Address already in use"
        assert result.returncode == 2, result.stderr
        assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    # before its banner and its data directory (they came first, then the error)
    assert run.stdout == "" and not (tmp_path / "data").exists(), run.stdout
    assert relay.stderr.count("\n") == 1, relay.stderr
    huge = orderwatch("relay", "--robots", str(robots), "--port", "99999", timeout=60)
    assert huge.returncode == 2 and "cannot listen on 127.0.0.1:99999" in huge.stderr


def test_the_engine_refuses_a_shop_it_cannot_simulate(tmp_path):
    """--warm-start 1e6 failed in the engine ('year -712 is out of range', and a Rust
    panic under run); --orders-per-minute 1e9 ran out of memory in an endless run."""
    out = str(tmp_path / "e.jsonl")
    for args, said in (
            (("simulate", "--out", out, "--warm-start", "1e6"), "--warm-start: must be at most 30"),
            (("run", "--warm-start", "31"), "--warm-start: must be at most 30"),
            (("run", "--orders-per-minute", "1e9"), "--orders-per-minute: must be at most 100,000"),
            (("simulate", "--out", out, "--orders-per-minute", "2000", "--warm-start", "10"),
             "28,800,000 orders to simulate before the first event; at most 20,000,000"),
            (("run", "--orders-per-minute", "100000", "--warm-start", "1"), "at most 20,000,000"),
            # the flag given is the one named, not the --orders-per-minute it sets
            (("simulate", "--brokers", "127.0.0.1:1", "--rate", "2000", "--warm-start", "10"),
             "--warm-start 10 at --rate 2000 (9,486 orders a minute) is 136,600,791 orders")):
        result = orderwatch(*args, "--data", str(tmp_path / "ch")) if args[0] == "run" \
            else orderwatch(*args)
        assert result.returncode == 2 and said in result.stderr, (args, result.stderr[-500:])
    assert not (tmp_path / "ch").exists()  # refused before any work


def test_a_short_warm_up_is_announced_in_seconds_not_as_zero_minutes():
    from orderwatch.cli import _warm_up_span

    assert _warm_up_span(14_400 / 1e6) == "1 to 2 s"  # it read "0.0 to 0.0 min"
    assert _warm_up_span(1_440_000 / 1e6) == "1.4 to 3.6 min"
