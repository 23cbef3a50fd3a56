"""The `orderwatch` command (`shared/contract/outputs.md`).

Exit codes: 0 success, 2 usage or configuration error (one line on stderr), 1 anything
else. Bad input events never change the exit code: they are dead-lettered.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import orjson

from orderwatch.config import LANGUAGES, ConfigError, Settings, path_problem
from orderwatch.redaction import RedactingFormatter, redact


class UsageError(Exception):
    """Bad command-line usage: exit code 2."""


def _versions() -> str:
    """What a bug report needs: ours, and the engines the same code runs differently on."""
    from importlib.metadata import PackageNotFoundError, version

    def of(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    engines = ("bytewax", "clickhouse-connect", "chdb", "confluent-kafka")
    return "\n".join([f"orderwatch {of('orderwatch')}", *(f"  {n} {of(n)}" for n in engines),
                      f"  python {sys.version.split()[0]}"])


def _faults(text: str):
    from orderwatch.engine.faults import parse_fault_list

    try:
        return parse_fault_list(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _timestamp(text: str) -> float:
    """An engine start: its events, the warm-up's month before and the orders' days after
    included, must stay within the years events may carry (`EARLIEST_TS`, `LATEST_TS`)."""
    from orderwatch.events import EARLIEST_TS, LATEST_TS
    from orderwatch.timestamps import from_rfc3339

    try:
        ts = from_rfc3339(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 time with offset: {exc}") from None
    margin = 366 * 86400.0
    if not EARLIEST_TS + margin <= ts < LATEST_TS - margin:
        raise argparse.ArgumentTypeError(f"must lie between 1971 and 2098, got {text}")
    return ts


def _seconds(text: str) -> float:
    """90 or 90s, 30m, 2h, 1d: a duration as `silence add` takes it."""
    from orderwatch.durations import parse_duration

    try:
        return float(text)
    except ValueError:
        try:
            return parse_duration(text)
        except ConfigError:
            raise argparse.ArgumentTypeError(
                f"must be seconds or a duration such as 90s, 30m or 2h, got {text!r}") from None


def _positive(kind):
    return _at_least(kind, 0, strict=True)


def _non_negative(kind):
    return _at_least(kind, 0, strict=False)


def _at_least(kind, low: float, strict: bool, high: float = math.inf):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:  # argparse's own words would be "invalid parse value"
            raise argparse.ArgumentTypeError(
                f"must be {'a whole number' if kind is int else 'a number'}, got {text!r}"
            ) from None
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(
                f"must be a finite number {'>' if strict else '>='} {low}, got {text}")
        if value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high:,g}, got {text}")
        return value
    return parse


# The engine's bounds. A shop of 100,000 new orders a minute is 25 promotion nights of the
# seeds; past it, an endless run's event time crawls while the engine's orders pile up
# (10⁹ a minute ran out of memory). Orders live at most about 10 days, so a longer warm
# start adds nothing but time (and 10⁶ days fell before the year 1).
MAX_ORDERS_PER_MINUTE = 100_000
# events the engine makes per order (252,799 for 20,000 orders with every fault, 253,427
# with none): `simulate --rate` turns events a second into orders a minute with it
LIVE_EVENTS_PER_ORDER = 12.65
MAX_WARM_START_DAYS = 30
MAX_WARM_UP_ORDERS = 20_000_000  # 20 to 50 minutes of warm-up, and tens of GB held


def _add_warm_start(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--warm-start", type=_at_least(float, 0, False, MAX_WARM_START_DAYS), default=0.0,
        metavar="DAYS",
        help="start with DAYS of orders already in flight, as in a shop that was trading "
        "before OrderWatch was switched on (default 0: an empty shop; 10 covers the longest "
        "order life; at most 30). Costs 1 to 2.5 min per million orders before the first "
        "event")


def _orders_per_minute(parser: argparse.ArgumentParser, help: str,
                       default: float | None = 60.0) -> None:
    parser.add_argument(
        "--orders-per-minute", type=_at_least(float, 0, True, MAX_ORDERS_PER_MINUTE),
        default=default, metavar="R", help=help)


def _check_warm_up(args: argparse.Namespace, pace: str | None = None) -> None:
    """`pace` names the flag that set the orders per minute, when it was not given."""
    orders = args.orders_per_minute * 1440 * args.warm_start
    if orders > MAX_WARM_UP_ORDERS:
        pace = pace or f"--orders-per-minute {args.orders_per_minute:g}"
        raise UsageError(f"--warm-start {args.warm_start:g} at {pace} is {orders:,.0f} "
                         f"orders to simulate before the first event; at most "
                         f"{MAX_WARM_UP_ORDERS:,}: lower either")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orderwatch", description="Streaming monitoring and anomaly alerting for "
        "e-commerce order systems.",
        formatter_class=argparse.RawDescriptionHelpFormatter)  # --version's lines as written
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log OrderWatch's debug details")
    parser.add_argument("--version", action="version", version=_versions(),
                        help="show the versions of OrderWatch and the engines it runs on")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="live simulated traffic through the whole pipeline "
                         "(embedded ClickHouse, /metrics, console alerts)")
    run.add_argument("--duration", type=_positive(_seconds), default=None, metavar="S",
                     help="stop after S seconds (or 30m, 2h…) of traffic, counted once any "
                     "warm-up is done (default: until Ctrl-C)")
    run.add_argument("--rate", type=_positive(float), default=1000.0, metavar="EPS",
                     help="events per second (default 1000)")
    run.add_argument("--faults", type=_faults, default=_faults("all"), metavar="LIST",
                     help="fault scenarios to inject: all, none, or a comma list "
                     "(default all; see `orderwatch simulate --list-faults`)")
    run.add_argument("--data", default=None, metavar="DIR",
                     help="embedded ClickHouse directory (default $ORDERWATCH_CLICKHOUSE_DSN "
                          "or ./data/orderwatch.chdb, where every command reads and writes)")
    run.add_argument("--seed", type=int, default=None, help="simulation seed (default: random)")
    _orders_per_minute(run, "new orders per minute of event time (default 60; at most "
                       "100,000): the shop's size")
    run.add_argument("--faults-after", type=_positive(float), default=10.0, metavar="MIN",
                     help="event-time minutes of clean traffic before the first fault window "
                     "(default 10)")
    _add_warm_start(run)
    _add_recovery_flags(run.add_argument_group("recovery (as in python -m bytewax.run)"))

    sim = sub.add_parser("simulate", help="write a deterministic event file and its labels")
    sim.add_argument("--out", metavar="EVENTS.jsonl", help="event file to write")
    sim.add_argument("--labels", metavar="LABELS.jsonl", help="ground truth of injected faults")
    sim.add_argument("--orders", type=_positive(int), default=1000, metavar="N",
                     help="orders created from the start on (default 1000; with "
                     "--warm-start, those already in flight come on top)")
    _orders_per_minute(sim, "mean arrival rate of new orders in event time (default 60; "
                       "with --rate, what gives about EPS events a second; e.g. 1 spreads "
                       "20,000 orders over two weeks; at most 100,000)", default=None)
    sim.add_argument("--faults", type=_faults, default=frozenset(), metavar="LIST",
                     help="fault scenarios: all, none, or a comma list (default none)")
    sim.add_argument("--seed", type=int, default=7)
    sim.add_argument("--start", type=_timestamp, default=None, metavar="RFC3339",
                     help="event time of the first order (default 2026-02-23T00:00:00+08:00)")
    _add_warm_start(sim)
    sim.add_argument("--list-faults", action="store_true", help="list fault scenarios")
    sim.add_argument("--brokers", metavar="HOST:PORT",
                     help="also publish the events to Kafka (orders, callbacks, logistics), "
                     "keyed by order_no")
    sim.add_argument("--rate", type=_positive(float), metavar="EPS",
                     help="live: publish endless traffic until Ctrl-C, each event when the "
                     "wall clock reaches its event time; orders arrive at the rate that "
                     "gives about EPS events per second once they have lived their days "
                     "(from the start with --warm-start). Needs --brokers; --orders is "
                     "ignored")

    rep = sub.add_parser("replay", help="feed recorded events through the dataflow")
    rep.add_argument("files", nargs="+", metavar="EVENTS.jsonl")
    _add_clickhouse(rep)
    rep.add_argument("--alerts-out", metavar="ALERTS.jsonl",
                     help="write every alert notification here (default: the console)")
    rep.add_argument("--metrics", action="store_true", help="serve /metrics while replaying")

    con = sub.add_parser("consume", help="production mode: the same dataflow reading Kafka")
    con.add_argument("--brokers", required=True, metavar="HOST:PORT")
    con.add_argument("--topics", default="orders,callbacks,logistics", metavar="LIST",
                     help="the three streams' topics (default orders,callbacks,logistics)")
    _add_clickhouse(con)
    con.add_argument("--alerts-out", metavar="ALERTS.jsonl",
                     help="write every alert notification here (default: the console)")
    con.add_argument("--dead-letter-topic", default="orderwatch.dead_letters", metavar="TOPIC",
                     help="where malformed messages are copied, reason in a header "
                     "('' to disable)")
    con.add_argument("--until-end", action="store_true",
                     help="stop at the end of every partition (a backfill) instead of tailing")

    for verb in (rep, con):
        _add_execution_flags(verb)

    relay = sub.add_parser("relay", help="Alertmanager webhooks to the WeCom/DingTalk robots")
    relay.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1; any other needs "
                       "ORDERWATCH_RELAY_TOKEN)")
    relay.add_argument("--port", type=_positive(int), default=9095)
    relay.add_argument("--robots", metavar="FILE", help="robots and routes "
                       "(default $ORDERWATCH_ROBOTS_FILE)")
    relay.add_argument("--state", metavar="DIR", help="outbox directory "
                       "(default $ORDERWATCH_STATE_DIR or ./data/state)")

    silence = sub.add_parser("silence", help="mute robot notifications matching labels")
    silence.add_argument("--state", metavar="DIR", help="state directory "
                         "(default $ORDERWATCH_STATE_DIR or ./data/state)")
    verbs = silence.add_subparsers(dest="silence_command", required=True, metavar="VERB")
    add = verbs.add_parser("add", help="add a silence: orderwatch silence add "
                           "alert=callback_lost gateway=alipay --duration 2h --comment …")
    add.add_argument("matchers", nargs="+", metavar="MATCHER",
                     help="name=value, name!=value, name=~regex (the alert name is `alert` "
                     "or `alertname`)")
    add.add_argument("--duration", default="2h", help="how long (default 2h; s, m, h, d)")
    add.add_argument("--comment", required=True, help="why, and who")
    verbs.add_parser("list", help="active silences")
    expire = verbs.add_parser("expire", help="end a silence now")
    expire.add_argument("id", type=int)

    report = sub.add_parser("report", help="reports from the results in ClickHouse")
    kinds = report.add_subparsers(dest="report_kind", required=True, metavar="KIND")
    weekly = kinds.add_parser("weekly", help="the weekly health check (shared/domain.md): "
                              "four checks against the week before, worst dimensions, "
                              "riskiest open orders; markdown, PNG chart, HTML")
    weekly.add_argument("--week", metavar="YYYY-Www", help="ISO week, e.g. 2026-W08 "
                        "(default: the last complete week before the latest data)")
    weekly.add_argument("--send", action="store_true", help="post it to the robots of "
                        "--robots / $ORDERWATCH_ROBOTS_FILE (`weekly:` picks them; default all)")
    weekly.add_argument("--html", metavar="FILE", help="write the self-contained HTML report "
                        "here (default ./orderwatch-weekly-<week>.html)")
    weekly.add_argument("--png", metavar="FILE", help="also write the trend chart here")
    weekly.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    weekly.add_argument("--language", choices=LANGUAGES, help="default $ORDERWATCH_LANGUAGE "
                        "or zh")
    weekly.add_argument("--robots", metavar="FILE", help="robots file (for --send)")
    _add_clickhouse(weekly)

    sql = sub.add_parser("sql", help="run a query on the embedded (or any) ClickHouse")
    sql.add_argument("query")
    _add_clickhouse(sql)
    return parser


def _env_default(name: str, kind=str):
    raw = os.environ.get(name)
    return None if raw is None else kind(raw)


def _add_execution_flags(parser: argparse.ArgumentParser) -> None:
    """Bytewax's own scaling and recovery flags (and env variables), as `bytewax.run` has them."""
    group = parser.add_argument_group("scaling and recovery (as in python -m bytewax.run)")
    group.add_argument("-i", "--process-id", type=int,
                       default=_env_default("BYTEWAX_PROCESS_ID", int),
                       help="this process's index among --addresses; 0 is the leader, which "
                       "writes ClickHouse and the alerts [env: BYTEWAX_PROCESS_ID]")
    group.add_argument("-a", "--addresses", default=os.environ.get("BYTEWAX_ADDRESSES"),
                       metavar="HOST:PORT;…",
                       help="every process's address, separated by ';' [env: BYTEWAX_ADDRESSES]")
    group.add_argument("-w", "--workers-per-process", type=_positive(int),
                       default=_env_default("BYTEWAX_WORKERS_PER_PROCESS", int) or 1)
    _add_recovery_flags(group)


def _add_recovery_flags(group: argparse._ArgumentGroup) -> None:
    """`run` takes these alone: its one engine partition has nothing to scale."""
    group.add_argument("-r", "--recovery-directory", metavar="DIR",
                       default=os.environ.get("BYTEWAX_RECOVERY_DIRECTORY"),
                       help="keep state snapshots here and resume from them after a crash "
                       "(created if missing) [env: BYTEWAX_RECOVERY_DIRECTORY]")
    group.add_argument("-s", "--snapshot-interval", type=_positive(float), metavar="S",
                       default=_env_default("BYTEWAX_SNAPSHOT_INTERVAL", float) or 10.0,
                       help="seconds between snapshots; a resume replays at most this much "
                       "(default 10) [env: BYTEWAX_SNAPSHOT_INTERVAL]")


def _execution(args: argparse.Namespace):
    from orderwatch.pipelines.runner import Cluster

    addresses = tuple(a.strip() for a in (args.addresses or "").split(";") if a.strip())
    process_id = args.process_id if args.process_id is not None else 0
    if addresses and not 0 <= process_id < len(addresses):
        raise UsageError(f"--process-id {process_id} is not an index into the "
                         f"{len(addresses)} --addresses")
    if args.process_id is not None and not addresses:
        raise UsageError("--process-id needs --addresses (every process's host:port)")
    for address in addresses:  # else Bytewax stops with "error building timely communication"
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"--addresses: {address!r} is not host:port (port 1-65535)")
    return Cluster(process_id, addresses, args.workers_per_process), _recovery(args)


def _recovery(args: argparse.Namespace):
    from orderwatch.pipelines.runner import Recovery

    if not args.recovery_directory:
        return None
    recovery = Recovery(Path(args.recovery_directory), args.snapshot_interval, args.command)
    recovery.check_command()
    return recovery


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    try:
        settings = Settings.from_env()
        if args.command == "simulate":
            return cmd_simulate(args)
        return COMMANDS[args.command](args, settings)
    except (ConfigError, UsageError) as exc:
        print(f"orderwatch: {redact(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("orderwatch: interrupted", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `orderwatch report weekly | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        if exc.filename is None:
            return _failed(exc)
        # a path given on the command line or in settings: --out, --html, --labels…
        print(f"orderwatch: cannot use {exc.filename}: {path_problem(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:
        return _failed(exc)


def _configure_logging(verbose: bool) -> None:
    """-v: our debug lines and the libraries' info (httpx's requests; not matplotlib's
    hundreds of font scores). Every line is redacted: httpx logs robot URLs whole."""
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if not verbose:  # on the handler: clickhouse_connect resets urllib3's level
        handler.addFilter(_quiet_http_libraries)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler])
    if verbose:
        logging.getLogger("orderwatch").setLevel(logging.DEBUG)


def _quiet_http_libraries(record: logging.LogRecord) -> bool:
    """Their retries and failures reach us as exceptions, which we word in one line."""
    return record.levelno >= logging.ERROR or not record.name.startswith(
        ("urllib3", "clickhouse_connect"))


def _failed(exc: Exception) -> int:
    logging.getLogger("orderwatch").debug("failed", exc_info=True)
    print(f"orderwatch: error: {redact(str(exc))}", file=sys.stderr)
    return 1


def cmd_simulate(args: argparse.Namespace) -> int:
    from orderwatch.engine.faults import SCENARIOS
    from orderwatch.engine.simulator import SimConfig, simulate

    if args.list_faults:
        for s in SCENARIOS.values():
            print(f"{s.name:<20} {s.scope:<7} raises {', '.join(s.raises):<60} {s.story}")
        return 0
    if not args.out and not args.brokers:
        raise UsageError("simulate needs --out EVENTS.jsonl and/or --brokers HOST:PORT")
    pace = None
    if args.orders_per_minute is None:
        args.orders_per_minute = 60.0 if args.rate is None else min(
            args.rate * 60 / LIVE_EVENTS_PER_ORDER, MAX_ORDERS_PER_MINUTE)
        if args.rate is not None:
            pace = f"--rate {args.rate:g} ({args.orders_per_minute:,.0f} orders a minute)"
    elif args.rate is not None:
        raise UsageError("simulate --rate sets the orders per minute (about EPS events a "
                         "second in wall-clock time): give --rate or --orders-per-minute")
    _check_warm_up(args, pace)
    _files_apart([], [("--out", args.out), ("--labels", args.labels)])
    if args.rate is not None:
        return _simulate_live(args)
    config = SimConfig(seed=args.seed, orders=args.orders, faults=args.faults,
                       orders_per_minute=args.orders_per_minute,
                       warm_up=args.warm_start * 86400.0)
    if args.start is not None:
        config.start = args.start
    publisher = None
    if args.brokers:
        from orderwatch.pipelines.kafka_sink import EventPublisher

        publisher = EventPublisher(args.brokers)
    count = 0
    # both files are opened before the work, so a mistyped path costs no simulation
    with open(args.out or os.devnull, "wb") as out, \
            open(args.labels or os.devnull, "wb") as labels_out:
        def write(event: dict) -> None:
            nonlocal count
            out.write(orjson.dumps(event) + b"\n")
            if publisher is not None:
                publisher.publish(event)
            count += 1
        labels = simulate(config, write)
        for label in labels:
            labels_out.write(orjson.dumps(label) + b"\n")
    if publisher is not None:
        publisher.close()
    where = " and ".join(w for w in (args.out, args.brokers and f"Kafka at {args.brokers}")
                         if w)
    orders = f"{args.orders:,} orders" + (  # the in-flight ones are not counted on their own
        f" and those in flight from {args.warm_start:g} day(s) of trading before"
        if args.warm_start else "")
    print(f"wrote {count:,} events for {orders} to {where}"
          + (f", {len(labels):,} fault labels to {args.labels}" if args.labels else ""))
    return 0


def _simulate_live(args: argparse.Namespace) -> int:
    from orderwatch.engine.simulator import SimConfig, Simulator
    from orderwatch.pipelines.kafka_sink import EventPublisher
    from orderwatch.timestamps import from_rfc3339

    if not args.brokers or args.out:
        raise UsageError("simulate --rate publishes live to Kafka: give --brokers, not --out")
    config = SimConfig(seed=args.seed, orders=None, faults=args.faults, start=time.time(),
                       orders_per_minute=args.orders_per_minute, first_window_at=10 * 60.0,
                       record_labels=False, warm_up=args.warm_start * 86400.0)
    sim = Simulator(config)
    stop = _stop_on_signals()
    while not sim.warm_up(budget_s=0.2):  # before the clock starts; Ctrl-C still stops it
        if stop.is_set():
            return 0
    publisher = EventPublisher(args.brokers)
    print(f"publishing live traffic to Kafka at {args.brokers}: about {args.rate:,.0f} "
          f"events/s ({args.orders_per_minute:,.0f} orders a minute) in wall-clock time "
          "(Ctrl-C to stop)", flush=True)
    newest = -math.inf
    for event in sim.events():
        if stop.is_set():
            break
        # Event time is the wall clock: a consumer refuses events far ahead of it, and
        # dashboards show the last hours. Late and redelivered copies (older than the
        # newest) and the bad timestamps the engine injects follow at once, in the order
        # the engine delivers them.
        with contextlib.suppress(KeyError, TypeError, ValueError):
            newest = max(newest, from_rfc3339(event["occurred_at"]))
        ahead = newest - time.time()
        if ahead > 0:
            time.sleep(ahead)
        publisher.publish(event)
    publisher.close()
    print(f"published {publisher.sent:,} events")
    return 0


def cmd_consume(args: argparse.Namespace, settings: Settings) -> int:
    from orderwatch.pipelines.kafka_sink import DeadLetterTopicSink
    from orderwatch.pipelines.kafka_source import KafkaSource
    from orderwatch.pipelines.runner import execute

    settings = _clickhouse_of(settings, args)
    topics = tuple(t.strip() for t in args.topics.split(",") if t.strip())
    if len(topics) != 3:
        raise UsageError("--topics takes three topics: orders,callbacks,logistics")
    cluster, recovery = _execution(args)
    stop = _stop_on_signals("writing results; event time stays where it was for a resume")
    source = KafkaSource(args.brokers, topics, settings.pipeline.source_batch_size,
                         args.until_end, stop, settings.pipeline.max_ahead_of_wall_clock_s)
    tz = settings.display_timezone
    notifiers = _notifiers(settings, args.alerts_out, cluster, recovery)
    dead = DeadLetterTopicSink(args.brokers, args.dead_letter_topic) \
        if args.dead_letter_topic else None
    summary = execute(source, settings, notifiers, serve_metrics=True, dead_letters=dead,
                      cluster=cluster, recovery=recovery, stop=stop)
    print("\n".join(summary.lines(tz)))
    return 0


def _add_clickhouse(verb: argparse.ArgumentParser) -> None:
    where = verb.add_mutually_exclusive_group()
    where.add_argument("--clickhouse", metavar="DSN",
                       help="chdb:///path (embedded) or http://host:8123/db "
                       "(default $ORDERWATCH_CLICKHOUSE_DSN or chdb://./data/orderwatch.chdb)")
    where.add_argument("--data", metavar="DIR",
                       help="embedded ClickHouse directory (--clickhouse chdb://DIR)")


def _with_dsn(settings: Settings, dsn: str | None, data_dir: str | None) -> Settings:
    if dsn:
        return replace(settings, clickhouse_dsn=dsn)
    if data_dir:
        return replace(settings, clickhouse_dsn="chdb://" + os.path.abspath(data_dir))
    return settings


def _clickhouse_of(settings: Settings, args: argparse.Namespace) -> Settings:
    """Where a command reads or writes: --clickhouse, else --data, else where every command
    does by default ($ORDERWATCH_CLICKHOUSE_DSN, else chdb://./data/orderwatch.chdb)."""
    return _with_dsn(settings, args.clickhouse, args.data)


def _notifiers(settings: Settings, alerts_out: str | None, cluster=None,
               recovery=None) -> list:
    """Every alert to ALERTS.jsonl and the configured robots; with neither, the console.

    The file is written anew, except when resuming from a recovery snapshot: then it is
    continued. Only the leader process notifies.
    """
    from orderwatch.alerts.outputs import ConsoleNotifier, JsonlNotifier

    tz = settings.display_timezone
    if cluster is not None and not cluster.leader:
        return []  # alerts reach the leader process only
    notifiers: list = []
    if alerts_out:
        if not (recovery is not None and recovery.resuming()):
            open(alerts_out, "wb").close()
        notifiers.append(JsonlNotifier(alerts_out, tz))
    if settings.robots_file:
        from orderwatch.alerts.robot_config import load_robots
        from orderwatch.alerts.robot_notifier import RobotNotifier

        config = load_robots(settings.robots_file)
        if config.disabled:
            print(f"robots switched off: {config.switched_off()}", file=sys.stderr)
        if config.robots:
            notifiers.append(RobotNotifier(config, settings.state_dir, tz))
    return notifiers or [ConsoleNotifier(tz)]


def cmd_silence(args: argparse.Namespace, settings: Settings) -> int:
    from orderwatch.alerts.silences import Silences, parse_matcher
    from orderwatch.durations import parse_duration
    from orderwatch.timestamps import to_rfc3339

    silences = Silences(Path(args.state or settings.state_dir) / "silences.sqlite3")
    tz = settings.display_timezone
    if args.silence_command == "add":
        matchers = [parse_matcher(m) for m in args.matchers]
        s = silences.add(matchers, parse_duration(args.duration), args.comment)
        print(f"silence {s.id} until {to_rfc3339(s.ends_at, tz)}: "
              f"{' '.join(map(str, s.matchers))}")
    elif args.silence_command == "list":
        print("id\tends_at\tmatchers\tcomment")
        for s in silences.active():
            print(f"{s.id}\t{to_rfc3339(s.ends_at, tz)}\t{' '.join(map(str, s.matchers))}"
                  f"\t{s.comment}")
    else:
        silences.expire(args.id)
        print(f"silence {args.id} expired")
    return 0


def cmd_relay(args: argparse.Namespace, settings: Settings) -> int:
    from orderwatch.alerts.relay import Relay, serve_relay

    robots = args.robots or settings.robots_file
    if not robots:
        raise UsageError("relay needs --robots FILE (or ORDERWATCH_ROBOTS_FILE)")
    token = os.environ.get("ORDERWATCH_RELAY_TOKEN") or None
    if args.state:  # for everything kept: the outbox, silences, the weekly ledger and reports
        settings = replace(settings, state_dir=args.state)
    relay = Relay(robots, settings.state_dir, token, settings.display_timezone)
    stop = _stop_on_signals()
    server = serve_relay(relay, args.host, args.port)
    weekly = _weekly_robot(settings, relay.config)
    relay.on_reload.append(weekly.reconfigure)
    print(f"relay listening on http://{args.host}:{args.port}/alertmanager/<route> "
          f"(routes: {', '.join(r.name for r in relay.config.routes)}; robots: "
          f"{', '.join(relay.config.robots) or 'none'})", flush=True)
    while not stop.is_set():
        time.sleep(0.2)
    server.shutdown()
    weekly.stop()
    relay.worker.stop()
    return 0


def _stop_on_signals(saying: str = "flushing state, writing results"):
    """First Ctrl-C (or SIGTERM): end the input cleanly, write, summarize; second: abort."""
    from orderwatch.pipelines.sources import StopSignal

    stop = StopSignal()
    signalled = threading.Event()  # not stop.is_set(): another process of a cluster sets it

    def on_interrupt(signum, frame):
        if signalled.is_set():
            raise KeyboardInterrupt
        signalled.set()
        stop.set()
        # not print(): the main thread may be inside print() right now (reentrant write)
        os.write(sys.stderr.fileno(), f"\nstopping: {saying}…\n".encode())

    signal.signal(signal.SIGINT, on_interrupt)
    signal.signal(signal.SIGTERM, on_interrupt)
    return stop


_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz",
          b"\x28\xb5\x2f\xfd": "zstd"}


def _files_apart(reads: list[tuple[str, str | None]],
                 writes: list[tuple[str, str | None]]) -> None:
    """Refuse an output that is one of the inputs, or two outputs on one file: opening it
    for writing would empty it first (`replay e.jsonl --alerts-out e.jsonl` lost every
    event). Devices such as /dev/null may be shared."""
    seen: dict[object, str] = {}
    outputs = {role for role, _ in writes}
    for role, path in [*reads, *writes]:
        if not path:
            continue
        try:
            st = os.stat(path)
        except OSError:  # not there yet: its absolute, symlink-free name is its identity
            identity: object = os.path.realpath(path)
        else:
            if not stat.S_ISREG(st.st_mode):
                continue
            identity = (st.st_dev, st.st_ino)  # hard links and ./ spellings alike
        if identity in seen and role in outputs:
            raise UsageError(f"{role} {path} is also {seen[identity]}: writing it would "
                             "overwrite that; give each output a file of its own")
        seen.setdefault(identity, f"{role} {path}")


def _compression(path: str) -> str | None:
    with open(path, "rb") as f:
        head = f.read(6)
    return next((name for magic, name in _MAGIC.items() if head.startswith(magic)), None)


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from orderwatch.pipelines.runner import execute
    from orderwatch.pipelines.sources import JsonlSource

    for path in args.files:
        if os.path.isdir(path):
            raise UsageError(f"{path} is a directory; give the event files in it")
        if not os.path.exists(path):
            raise UsageError(f"no such event file: {path}")
        if not os.path.isfile(path):  # each stripe opens it, and a resume seeks in it
            raise UsageError(f"{path} is not a regular file (a pipe or a device?); "
                             "replay reads files: save the events to one first")
        compressed = _compression(path)
        if compressed:  # each line would be dead-lettered as not JSON
            raise UsageError(f"{path} is {compressed}-compressed; replay reads plain JSON "
                             "Lines: decompress it to a file first")
    _files_apart([("the event file", path) for path in args.files],
                 [("--alerts-out", args.alerts_out)])
    settings = _clickhouse_of(settings, args)
    cluster, recovery = _execution(args)
    tz = settings.display_timezone
    notifiers = _notifiers(settings, args.alerts_out, cluster, recovery)
    # every worker decodes a stripe of each file (decoding is a tenth of the work)
    stripes, batch_size = cluster.workers, settings.pipeline.source_batch_size
    if recovery is not None:
        stripes, batch_size = recovery.replay_layout(args.files, stripes, batch_size)
    source = JsonlSource(args.files, batch_size, stripes,
                         settings.pipeline.max_ahead_of_neighbours_s)
    summary = execute(source, settings,
                      notifiers, serve_metrics=args.metrics, cluster=cluster,
                      recovery=recovery)
    print("\n".join(summary.lines(tz)))
    return 0


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from orderwatch.alerts.robot_notifier import RobotNotifier
    from orderwatch.engine.simulator import SimConfig
    from orderwatch.pipelines.http_endpoint import check_listen
    from orderwatch.pipelines.runner import execute
    from orderwatch.pipelines.sources import EngineSource
    from orderwatch.timestamps import to_rfc3339

    _check_warm_up(args)
    settings = _with_dsn(settings, None, args.data)
    check_listen(settings.metrics_host, settings.metrics_port)  # before the banner
    shop = {"seed": args.seed if args.seed is not None else int(time.time()) % 100_000,
            "start": time.time(), "faults": sorted(args.faults),
            "orders_per_minute": args.orders_per_minute, "faults_after": args.faults_after,
            "warm_start": args.warm_start}
    recovery = _recovery(args)
    resumed = recovery is not None and recovery.resuming()
    if recovery is not None:
        shop = _same_shop(args, shop, recovery.live_engine(shop))
    seed = shop["seed"]
    config = SimConfig(seed=seed, orders=None, orders_per_minute=shop["orders_per_minute"],
                       faults=frozenset(shop["faults"]), start=shop["start"],
                       first_window_at=shop["faults_after"] * 60.0, record_labels=False,
                       warm_up=shop["warm_start"] * 86400.0)
    stop = _stop_on_signals()
    print(f"OrderWatch live: reference engine (seed {seed}, faults: "
          f"{', '.join(sorted(args.faults)) or 'none'}) at {args.rate:,.0f} events/s")
    print(f"metrics   http://{settings.metrics_host}:{settings.metrics_port}/metrics")
    print(f"results   {settings.clickhouse_dsn} (database {settings.clickhouse_database})")
    if resumed:
        print(f"resuming  the shop simulated since {to_rfc3339(config.start)} from "
              f"{recovery.directory}: events sent before its last snapshot are skipped")
    if args.warm_start:
        orders = args.orders_per_minute * 1440 * args.warm_start
        days = f"{args.warm_start:g} day" + ("" if args.warm_start == 1 else "s")
        print(f"warm-up   {days} of trading ({orders:,.0f} orders) simulated before the "
              f"first event: {_warm_up_span(orders / 1e6)}")
    notifiers = _notifiers(settings, None)
    robots = [n for n in notifiers if isinstance(n, RobotNotifier)]
    print("alerts    " + (f"robots ({', '.join(robots[0].config.robots)}) via "
                          f"{settings.robots_file}" if robots
                          else "console (no robot configured)"), flush=True)
    weekly = _weekly_robot(settings, robots[0].config if robots else None)
    try:
        source = EngineSource(config, args.rate, args.duration, stop,
                              settings.pipeline.source_batch_size,
                              settings.pipeline.max_ahead_of_neighbours_s)
        summary = execute(source, settings, notifiers, serve_metrics=True, progress_s=5.0,
                          warm_up_left_s=source.warm_up_left_s, recovery=recovery)
    finally:
        weekly.stop()
    summary.warm_up_s = source.warm_up_took_s()
    print("\nsummary\n" + "\n".join(summary.lines(settings.display_timezone)))
    return 0


def _warm_up_span(low_min: float) -> str:
    """1 to 2.5 min per million orders (the --warm-start help), in seconds when short."""
    if low_min * 2.5 < 1:
        return f"{low_min * 60:,.0f} to {low_min * 150:,.0f} s"
    return f"{low_min:,.1f} to {low_min * 2.5:,.1f} min"


def _same_shop(args: argparse.Namespace, asked: dict, recorded: dict) -> dict:
    """The recorded shop, unless a flag asks for another one: a resume cannot change the
    shop it continues (the seed may be left out; it is recorded)."""
    flags = {"seed": "--seed", "faults": "--faults", "orders_per_minute": "--orders-per-minute",
             "faults_after": "--faults-after", "warm_start": "--warm-start"}
    differ = [f"{flag} {_flag_text(recorded[name])}" for name, flag in flags.items()
              if recorded[name] != asked[name] and not (name == "seed" and args.seed is None)]
    if differ:
        raise UsageError(f"the recovery directory {args.recovery_directory} continues the shop "
                         f"of {', '.join(differ)}: resume with the same flags, or give a new "
                         "directory")
    return recorded


def _flag_text(value) -> str:
    if isinstance(value, list):  # fault names
        return ",".join(value) or "none"
    return f"{value:g}"


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from orderwatch.alerts.robot_config import load_robots
    from orderwatch.alerts.weekly_checks import Week
    from orderwatch.alerts.weekly_robot import Ledger, build, send
    from orderwatch.pipelines.reader import reader

    settings = _clickhouse_of(settings, args)
    try:
        week = Week.parse(args.week, settings.display_timezone) if args.week else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    robots, path = None, None
    if args.send:  # read the robots first: a bad file should fail before the work
        path = args.robots or settings.robots_file
        if not path:
            raise UsageError("--send needs --robots FILE (or ORDERWATCH_ROBOTS_FILE)")
        robots = load_robots(path)
        if not robots.weekly_robots():
            raise UsageError("no robot to send to: " + (
                robots.switched_off() or "`weekly: robots` names none of the file's robots"))
    _files_apart([("--robots", path)],
                 [("--html", args.html), ("--png", args.png), ("--json", args.json)])
    built = build(reader(settings), settings, week, args.language)
    week = built.report.week
    html_path = args.html or f"orderwatch-weekly-{week}.html"
    with open(html_path, "w", encoding="utf-8") as f:
        f.write(built.html)
    if args.png:
        with open(args.png, "wb") as f:
            f.write(built.png)
    if args.json:
        with open(args.json, "wb") as f:
            f.write(orjson.dumps(built.report, option=orjson.OPT_INDENT_2))
    print("\n".join([built.headline, *built.lines]))
    print(f"\nHTML report: {html_path}" + (f"; chart: {args.png}" if args.png else ""))
    if robots is None:
        return 0
    results = send(built, robots, settings.display_timezone,
                   Ledger(Path(settings.state_dir) / "weekly-sent.json"), again=True)
    for name, outcome in results.items():
        print(f"robot {name}: {'sent' if outcome.ok else 'FAILED ' + outcome.detail}")
    return 0 if all(o.ok for o in results.values()) else 1


def _weekly_robot(settings: Settings, robots):
    """The weekly health check, posted on schedule while this process runs."""
    from orderwatch.alerts.weekly_robot import WeeklyRobot, next_run
    from orderwatch.pipelines.reader import reader
    from orderwatch.timestamps import to_rfc3339

    weekly = WeeklyRobot(lambda sql: reader(settings)(sql), settings, robots)
    weekly.start()  # idle while the schedule is off, which a reloaded file may change
    if weekly.schedule.enabled:
        when = next_run(time.time(), weekly.schedule, settings.display_timezone)
        print(f"weekly    health check {to_rfc3339(when, settings.display_timezone)} to "
              + (", ".join(robots.weekly_robots()) or "no robot" if robots else
                 "the console") + f" and {settings.state_dir}/reports/\n", flush=True)
    return weekly


def cmd_sql(args: argparse.Namespace, settings: Settings) -> int:
    from orderwatch.pipelines.http_endpoint import tab_separated
    from orderwatch.pipelines.reader import reader

    if not args.query.strip():  # in words, not the parser's "Empty query (SYNTAX_ERROR)"
        raise UsageError("the query is empty")
    settings = _clickhouse_of(settings, args)
    columns, rows = reader(settings)(args.query)
    sys.stdout.write(tab_separated(columns, rows))
    return 0


COMMANDS = {"run": cmd_run, "replay": cmd_replay, "consume": cmd_consume, "sql": cmd_sql,
            "relay": cmd_relay, "silence": cmd_silence, "report": cmd_report}


if __name__ == "__main__":
    sys.exit(main())
