"""Run the dataflow end to end: schema, sinks, /metrics, Bytewax, summary."""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bytewax.inputs import Source
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import cluster_main, run_main

from orderwatch.alerts.outputs import Notifier
from orderwatch.config import ConfigError, Settings
from orderwatch.detectors.base import Alert
from orderwatch.pipelines.clickhouse_client import (
    Target,
    connect,
    held_by_another_process,
    parse_dsn,
    write_lock,
)
from orderwatch.pipelines.clickhouse_schema import migrate, settle
from orderwatch.pipelines.dataflow import build_flow
from orderwatch.pipelines.decoding import Chunk
from orderwatch.pipelines.http_endpoint import check_listen, serve
from orderwatch.pipelines.prometheus_export import Exporter
from orderwatch.pipelines.reader import read_only
from orderwatch.pipelines.sinks import AlertSink, ClickHouseSink
from orderwatch.pipelines.snapshot_cost import SnapshotCost
from orderwatch.timestamps import to_rfc3339

if TYPE_CHECKING:
    from orderwatch.pipelines.sources import StopSignal

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Cluster:
    """Where this process stands among the processes running the dataflow together.

    Process 0 is the leader: it owns ClickHouse (migrations, writes, the final merge) and
    the alert notifiers. With no addresses the dataflow runs alone in this process.
    """

    process_id: int = 0
    addresses: tuple[str, ...] = ()
    workers_per_process: int = 1

    @property
    def leader(self) -> bool:
        return self.process_id == 0

    @property
    def workers(self) -> int:
        return max(1, len(self.addresses)) * self.workers_per_process


@dataclass(frozen=True, slots=True)
class Recovery:
    """Bytewax recovery: state snapshots in `directory` every `snapshot_interval_s`."""

    directory: Path
    snapshot_interval_s: float = 10.0
    command: str = ""  # the orderwatch command; recorded with the layout

    PARTITIONS = 1  # recovery database partitions; fixed once created
    # see replay_layout(), shard_placement() and live_engine()
    LAYOUT = "orderwatch-replay.json"

    def resuming(self) -> bool:
        return any(self.directory.glob("part-*.sqlite3"))

    def replay_layout(self, files: list[str], workers: int, batch_size: int
                      ) -> tuple[int, int]:
        """(stripes, lines per block) for a replay: what the run that started this
        directory used, whatever the workers and the setting now.

        Bytewax keeps each stripe's read position under the stripe's name and panics on a
        snapshot of a partition no longer listed; kept, the stripes move between workers
        on a resume with another count, as the shards do. A stripe's position counts its
        own lines, so blocks of another size would skip lines and read others twice. A
        resume without one of the files the directory started with would meet the panic,
        so it is refused up front. A directory from before these were recorded gets
        today's values. The shards' placement is recorded in the same write: the
        processes of a cluster sharing the directory each write the whole layout, so one
        that finds another's snapshots already there never reads a part of it."""
        if not self.resuming():  # nothing to resume: this run sets the layout
            self._record_layout({"stripes": workers, "files": files,
                                 "batch_size": batch_size, "placement": workers})
            return workers, batch_size
        layout = self._read_layout()
        stripes = _count(layout, "stripes", 0)
        try:
            started_with = [str(path) for path in layout["files"]]
        except (TypeError, KeyError):  # not recorded, or unreadable
            started_with = None
        if not stripes or started_with is None:
            return workers, batch_size
        missing = [path for path in started_with if path not in files]
        if missing:
            raise ConfigError(f"the recovery directory {self.directory} holds the read "
                              f"positions of {', '.join(missing)}: resume with the files "
                              "it started with, or give a new directory")
        return stripes, _count(layout, "batch_size", batch_size)

    def shard_placement(self, workers: int) -> int:
        """How many workers the shards' names are placed over (`placement`): as many as
        the run that started this directory had, since each snapshot is kept under its
        shard's name. A directory from before placement has the plain names: 1."""
        if not self.resuming():
            self._record_layout({"placement": workers})
            return workers
        return _count(self._read_layout(), "placement", 1)

    def check_command(self) -> None:
        """Refuses a directory another command started: each reads another input, and
        Bytewax panics on the snapshot of an input partition it is not given. A directory
        from before the command was recorded is taken as it is."""
        if not self.resuming() or not self.command:
            return
        layout = self._read_layout()
        recorded = layout.get("command") or ("replay" if "stripes" in layout else self.command)
        if recorded != self.command:
            raise ConfigError(f"the recovery directory {self.directory} holds the state of "
                              f"`orderwatch {recorded}`: resume it with that command, or "
                              "give a new directory")

    def live_engine(self, settings: dict[str, Any]) -> dict[str, Any]:
        """The reference engine's `settings` (seed, start…) as the live run that started
        this directory recorded them. A resume skips the events the engine had sent, which
        is only right if it simulates the same shop from the same instant."""
        if not self.resuming():
            self._record_layout({"engine": settings})
            return settings
        recorded = self._read_layout().get("engine")
        if (isinstance(recorded, dict) and recorded.keys() == settings.keys()
                and all(_kind(recorded[k]) == _kind(v) for k, v in settings.items())):
            return recorded
        raise ConfigError(f"the recovery directory {self.directory} holds no shop that this "
                          "version of `orderwatch run` can continue: give a new directory")

    def _read_layout(self) -> dict:
        try:
            layout = json.loads((self.directory / self.LAYOUT).read_text())
        except (OSError, ValueError):  # none yet, or unreadable
            return {}
        return layout if isinstance(layout, dict) else {}

    def _record_layout(self, fields: dict) -> None:
        """Adds `fields` to what this run recorded (a replay records its stripes too).
        The command goes with every write, not in one of its own: the processes of a
        cluster each write what they need in one go (see replay_layout)."""
        if self.command:
            fields = {**fields, "command": self.command}
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / self.LAYOUT
        partial = path.with_name(f"{path.name}.{os.getpid()}")  # no torn reads
        partial.write_text(json.dumps({**self._read_layout(), **fields}) + "\n")
        partial.replace(path)

    def prepare(self) -> RecoveryConfig:
        if not self.resuming():
            self.directory.mkdir(parents=True, exist_ok=True)
            init_db_dir(self.directory, self.PARTITIONS)
        return RecoveryConfig(self.directory)


def _kind(value: Any) -> str:
    """What a recorded setting must be to be used: a finite number, a list of names…"""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number" if math.isfinite(value) else "not finite"
    if isinstance(value, list):
        return "names" if all(isinstance(v, str) for v in value) else "list"
    return type(value).__name__


def _count(layout: dict, name: str, before: int) -> int:
    """A count the recovery layout records, at least 1; `before` when it records none (or
    something that is not a number)."""
    try:
        return max(1, int(layout[name]))
    except (KeyError, TypeError, ValueError):
        return before


# The dataflow keeps hundreds of thousands of long-lived objects (open orders, reorder
# buffers) and allocates a few dozen containers per event. With Python's default
# thresholds (700, 10, 10) the cycle collector ran 76 full collections in a 1 M-event
# replay, a quarter of its time, rescanning live state that only reference counting ever
# frees. Collections after 100,000 net new containers keep them rare (a 1 M-event replay
# runs 15, and 15,000 events/s instead of 11,000, with the same peak memory); full
# collections still come, for what cyclic garbage there is.
GC_THRESHOLDS = (100_000, 10, 10)


@contextmanager
def gc_thresholds(thresholds: tuple[int, int, int] = GC_THRESHOLDS) -> Iterator[None]:
    previous = gc.get_threshold()
    gc.set_threshold(*thresholds)
    try:
        yield
    finally:
        gc.set_threshold(*previous)


def run_flow(flow: Any, cluster: Cluster, recovery: Recovery | None) -> None:
    with gc_thresholds():
        _run_flow(flow, cluster, recovery)


class DataflowPanicked(RuntimeError):
    """Bytewax stopped in its Rust code: pyo3 raises a `PanicException`, a BaseException
    that no `except Exception` sees, whose text alone says little."""


def _run_flow(flow: Any, cluster: Cluster, recovery: Recovery | None) -> None:
    options: dict[str, Any] = {}
    if recovery is not None:
        options = {"recovery_config": recovery.prepare(),
                   "epoch_interval": timedelta(seconds=recovery.snapshot_interval_s)}
    try:
        if cluster.addresses or cluster.workers_per_process > 1:
            cluster_main(flow, list(cluster.addresses), cluster.process_id,
                         worker_count_per_proc=cluster.workers_per_process, **options)
        else:
            run_main(flow, **options)
    except BaseException as exc:
        if type(exc).__name__ != "PanicException":  # pyo3's type cannot be imported
            raise
        raise DataflowPanicked(panic_text(str(exc), cluster)) from None


def panic_text(panic: str, cluster: Cluster) -> str:
    if len(cluster.addresses) > 1:  # a member gone: timely's send/receive threads panic
        return (f"another process of the cluster stopped or could not be reached (Bytewax: "
                f"{panic}); a cluster stops with any of its processes: start them all again "
                "(with -r DIR each resumes from its last snapshot)")
    return f"the dataflow stopped inside Bytewax: {panic}"


@dataclass
class Summary:
    target: Target
    elapsed_s: float
    events: int
    redelivered: int
    dead_letters: int
    open_orders: int
    watermark: float | None
    alerts: Counter = field(default_factory=Counter)
    peak_rss_mib: float | None = None  # of the dataflow, before the tables are merged
    merge_s: float | None = None  # the tables' final merge, the end of elapsed_s (leader)
    warm_up_s: float = 0.0  # the engine's warm-up before its first event, within elapsed_s
    late: int = 0  # events that came after their minute of health_metrics was final
    leader: bool = True  # the other processes of a cluster write no tables and no alerts
    # with recovery: (shard states pickled, seconds it took, bytes of the latest of each)
    snapshots: tuple[int, float, float] | None = None

    def lines(self, tz: str = "Asia/Shanghai") -> list[str]:
        flowing = self.elapsed_s - self.warm_up_s
        rate = self.events / flowing if flowing > 0 else 0.0
        out = [
            f"events processed   {self.events:,} in {flowing:.1f} s ({rate:,.0f}/s)"
            + (f" after a warm-up of {self.warm_up_s:.1f} s" if self.warm_up_s else ""),
            f"redeliveries       {self.redelivered:,} dropped (same event_id)",
            f"dead letters       {self.dead_letters:,}",
            f"late events        {self.late:,} after their minute was final "
            "(counted in late_events)",
            f"open orders        {self.open_orders:,}",
            "event time reached " + (to_rfc3339(self.watermark, tz) if self.watermark else "-"),
            "clickhouse         " + (f"{self.target.redacted()} database {self.target.database}"
                                     if self.leader else "written by process 0, the leader"),
        ]
        if self.peak_rss_mib is not None:
            out.append(f"memory peak        {self.peak_rss_mib:,.1f} MiB resident "
                       "(the dataflow, before the tables are merged)")
        if self.merge_s is not None:
            out.append(f"tables merged      in {self.merge_s:.1f} s (after the dataflow)")
        if self.snapshots is not None:
            count, seconds, size = self.snapshots
            share = f" ({seconds / flowing:.0%} of the run)" if flowing > 0 else ""
            out.append(f"snapshots          {count:,} shard states pickled in {seconds:.1f} s"
                       f"{share}, the latest {size / 1e6:,.1f} MB")
        if not self.leader:
            out.append("alerts             sent by process 0, the leader")
            return out
        names = sorted({name for name, _ in self.alerts})
        out.append(f"alerts             {sum(self.alerts.values()):,} notifications")
        out.extend(f"  {name:<26} firing {self.alerts[(name, 'firing')]:>6,}  "
                   f"resolved {self.alerts[(name, 'resolved')]:>6,}" for name in names)
        return out


class Progress(threading.Thread):
    """Prints a one-line heartbeat while a live run goes on."""

    def __init__(self, exporter: Exporter, every_s: float, tz: str,
                 warm_up_left_s: Callable[[], float | None] = lambda: None) -> None:
        super().__init__(daemon=True, name="orderwatch-progress")
        self.exporter = exporter
        self.every_s = every_s
        self.tz = tz
        self.warm_up_left_s = warm_up_left_s
        self.stopped = threading.Event()

    def run(self) -> None:
        last, last_t = 0.0, time.monotonic()
        while not self.stopped.wait(self.every_s):
            left = self.warm_up_left_s()
            if left:  # no event yet: say what the engine is doing instead of "events 0"
                print(f"· warming up: {left / 86400:,.1f} days of trading left to simulate "
                      "before the first event", flush=True)
                last_t = time.monotonic()
                continue
            e = self.exporter
            events = e.total("orderwatch_events")
            now = time.monotonic()
            mark = e.value("orderwatch_event_time_watermark_seconds")
            firing = e.total("orderwatch_alerts_firing")
            print(f"· events {events:,.0f} ({(events - last) / (now - last_t):,.0f}/s)"
                  f" · event time {to_rfc3339(mark, self.tz) if mark else '-'}"
                  f" · open orders {e.value('orderwatch_open_orders'):,.0f}"
                  f" · alerts firing {firing:,.0f}"
                  f" · dead letters {e.total('orderwatch_dead_letters'):,.0f}", flush=True)
            last, last_t = events, now


def execute(source: Source[Chunk], settings: Settings, notifiers: list[Notifier], *,
            serve_metrics: bool = False, progress_s: float | None = None,
            exporter: Exporter | None = None, dead_letters: Any = None,
            cluster: Cluster = Cluster(), recovery: Recovery | None = None,
            warm_up_left_s: Callable[[], float | None] = lambda: None,
            stop: StopSignal | None = None) -> Summary:
    """`stop`: the source's, for a cluster to stop with any of its processes told to."""
    target = parse_dsn(settings.clickhouse_dsn, settings.clickhouse_database)
    port = settings.metrics_port + cluster.process_id
    if serve_metrics:  # before the data directory is made
        check_listen(settings.metrics_host, port)
    if cluster.leader and held_by_another_process(target):
        raise ConfigError(f"{target.dsn} is open in another process (chDB allows one per data "
                          "directory): stop it, or give another --clickhouse or --data")
    client = connect(target) if cluster.leader else None
    if client is not None:
        with write_lock:
            migrate(client, target.database)
    exporter = exporter or Exporter(settings.pipeline.max_series_per_dimension)
    server = None
    if serve_metrics:  # /query: the embedded data, which no other process can open
        query = read_only(target) if target.embedded and cluster.leader else None
        server = serve(exporter, settings.metrics_host, port, query)
    alerts: Counter = Counter()

    def count(alert: Alert) -> None:
        alerts[(alert.alert, alert.status)] += 1

    p = settings.pipeline
    flow = build_flow(source, settings,
                      ClickHouseSink(target, exporter, p.clickhouse_batch_rows,
                                     p.clickhouse_flush_s, cluster.leader),
                      AlertSink(notifiers, exporter, count, cluster.leader), exporter,
                      dead_letters, snapshots=None if recovery is None else SnapshotCost(
                          exporter, recovery.snapshot_interval_s),
                      workers=cluster.workers if recovery is None
                      else recovery.shard_placement(cluster.workers), stop=stop)
    heartbeat = Progress(exporter, progress_s, settings.display_timezone,
                         warm_up_left_s) if progress_s else None
    started = time.monotonic()
    try:
        if heartbeat:
            heartbeat.start()
        run_flow(flow, cluster, recovery)
        peak_mib = peak_resident_mib()
    finally:
        if heartbeat:
            heartbeat.stopped.set()
        for notifier in notifiers:
            notifier.close()
        if server is not None:
            server.shutdown()
    merge_s = None
    if client is not None:
        merging = time.monotonic()
        with write_lock:
            settle(client, target.database)
        merge_s = time.monotonic() - merging
    mark = exporter.value("orderwatch_event_time_watermark_seconds")
    count, seconds = exporter.histogram_totals("orderwatch_snapshot_seconds")
    return Summary(target, time.monotonic() - started, int(exporter.total("orderwatch_events")),
                   int(exporter.total("orderwatch_events_redelivered")),
                   int(exporter.total("orderwatch_dead_letters")),
                   int(exporter.value("orderwatch_open_orders")), mark or None, alerts, peak_mib,
                   merge_s, late=int(exporter.total("orderwatch_events_late")),
                   leader=cluster.leader, snapshots=None if recovery is None else (
                       int(count), seconds, exporter.value("orderwatch_snapshot_bytes")))


def peak_resident_mib() -> float | None:
    """This process's resident high-water mark so far, or None off Linux."""
    kib = proc_status_kib("VmHWM")
    return None if kib is None else kib / 1024


def proc_status_kib(field: str, pid: int | str = "self") -> int | None:
    """A KiB field of Linux's /proc/PID/status (VmRSS, VmHWM); None if there is none."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None
