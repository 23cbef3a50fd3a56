"""All configuration in one typed place.

Defaults run the embedded mode (chDB under ./data, /metrics on 127.0.0.1:9464, alerts to
the console). Every detection threshold of the catalogue lives in `Thresholds`; secrets
(robot URLs and signing keys) are read from the environment and never printed.
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass, field, fields, replace
from zoneinfo import ZoneInfoNotFoundError

from orderwatch.events import CARRIERS
from orderwatch.timestamps import zone

HOUR = 3600.0
MINUTE = 60.0


class ConfigError(ValueError):
    """A configuration value that cannot be used; the CLI turns it into exit code 2."""


def path_problem(exc: OSError) -> str:
    """What is wrong with a path the user gave, in the system's words, except where they
    mislead: mkdir(exist_ok=True) meeting a file where a directory goes says "File exists"."""
    return "Not a directory" if isinstance(exc, FileExistsError) else str(exc.strerror)


LANGUAGES = ("zh", "en")

# What a number may be, beyond its type. Every number must be finite; then, by name:
# durations (`_s`, `_ms`) are more than 0, or 0 or more where 0 means "none"; shares
# (`_ratio`) lie in 0..1; counts (ints) are at least 1. `_RANGES` says the rest.
_ZERO_ALLOWED = frozenset({"allowed_lateness_s", "timezone_tolerance_s",
                           "premature_cancel_tolerance_s", "lock_wait_p95_ms",
                           "max_ahead_of_wall_clock_s", "max_ahead_of_neighbours_s"})
_RANGES: dict[str, tuple[float, float]] = {
    "risk_review": (0, 100), "risk_high": (0, 100),
    "duplicate_ship_min_requests": (2, math.inf),  # a duplicate takes two requests
    "metrics_port": (1, 65535),
}


def _check_values(section: object, prefix: str) -> None:
    for f in fields(section):  # type: ignore[arg-type]
        kind = str(f.type)
        if kind not in ("int", "float"):
            continue
        value = getattr(section, f.name)
        problem = _number_problem(f.name, kind, value)
        if problem is not None:
            raise ConfigError(f"{prefix}{f.name.upper()} {problem}, got {value!r}")


def _number_problem(name: str, kind: str, value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be {'an integer' if kind == 'int' else 'a number'}"
    if not math.isfinite(value):
        return "must be a finite number"
    if kind == "int" and not isinstance(value, int):
        return "must be an integer"
    if name in _RANGES:
        low, high = _RANGES[name]
        return None if low <= value <= high else f"must lie in {low:g}..{high:g}"
    if name.endswith(("_s", "_ms")):
        if name in _ZERO_ALLOWED:
            return None if value >= 0 else "must be 0 or more"
        return None if value > 0 else "must be more than 0"
    if name.endswith("_ratio"):
        return None if 0 <= value <= 1 else "must lie in 0..1"
    if kind == "int":
        return None if value >= 1 else "must be at least 1"
    return None if value > 0 else "must be more than 0"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Defaults are the contract's (`shared/contract/outputs.md`)."""

    # callback_lost: gateway says SUCCESS, order still pending this long after paid_at
    callback_lost_after_s: float = 10 * MINUTE
    # callback_failure_rate: share of failed notify callbacks over a sliding window
    callback_failure_window_s: float = 5 * MINUTE
    callback_failure_ratio: float = 0.05
    callback_failure_min_count: int = 20
    # silent_shipment: carriers that push pickups in real time get a shorter limit
    silent_fast_carriers: tuple[str, ...] = ("SF", "JD")
    silent_fast_limit_s: float = 4 * HOUR
    silent_default_limit_s: float = 24 * HOUR
    # duplicate submissions
    duplicate_ship_min_requests: int = 2
    duplicate_order_window_s: float = 10 * MINUTE
    # lock contention, per lock family
    lock_window_s: float = 5 * MINUTE
    lock_wait_p95_ms: float = 200.0
    lock_failure_ratio: float = 0.05
    lock_min_count: int = 50  # a share of fewer acquisitions is noise (2 of 31 = 6.5%)
    # instant alerts (a duplicate, an overrun) resolve after this much quiet event time
    instant_alert_hold_s: float = 1 * HOUR
    # callback_cert_expired resolves after this long without a certificate error
    cert_expired_quiet_s: float = 30 * MINUTE
    # timezone_skew: |server - client| within this of a whole number (≥ 1) of hours
    timezone_tolerance_s: float = 2 * MINUTE
    # premature_timeout_cancel: cancelled this much (or more) before the grace period ends
    premature_cancel_tolerance_s: float = 1 * MINUTE
    # status_flapping: the same two statuses alternate this often within the window
    flapping_min_alternations: int = 3
    flapping_window_s: float = 2 * HOUR
    # stuck_order: longest stay in a waiting state
    stuck_review_s: float = 2 * HOUR
    stuck_shipment_s: float = 48 * HOUR
    stuck_settlement_s: float = 72 * HOUR
    # pending_payment_backlog: of the orders created between `horizon` and `age` ago,
    # the share still pending payment
    backlog_age_s: float = 2 * HOUR
    backlog_horizon_s: float = 24 * HOUR
    backlog_ratio: float = 0.05
    backlog_min_orders: int = 100
    # per-order risk (0-100): review above this, alert at or above `risk_high`
    risk_review: float = 40.0
    risk_high: float = 60.0
    # channel_degraded: this many consecutive orders of a channel reached `risk_high`
    # within `channel_verdict_after_s` of their creation
    channel_streak: int = 10
    channel_verdict_after_s: float = 30 * MINUTE
    # metric_anomaly: minutes in a row a series must stay within its chart's limits
    # before it may fire (it learns until then), how far (weighted standard deviations)
    # an unseen level must lie, calm minutes before it resolves
    metric_anomaly_warmup_points: int = 240
    metric_anomaly_min_z: float = 5.0
    metric_anomaly_resolve_points: int = 15

    def __post_init__(self) -> None:
        _check_values(self, "ORDERWATCH_THRESHOLD_")
        if self.risk_review > self.risk_high:
            raise ConfigError(f"ORDERWATCH_THRESHOLD_RISK_REVIEW ({self.risk_review:g}) must not "
                              f"exceed ORDERWATCH_THRESHOLD_RISK_HIGH ({self.risk_high:g})")
        if self.backlog_horizon_s <= self.backlog_age_s:
            raise ConfigError("ORDERWATCH_THRESHOLD_BACKLOG_HORIZON_S must exceed "
                              "ORDERWATCH_THRESHOLD_BACKLOG_AGE_S: the backlog counts the "
                              "orders created between the two")
        unknown = sorted(set(self.silent_fast_carriers) - CARRIERS)
        if unknown:
            known = ", ".join(sorted(CARRIERS))
            raise ConfigError(f"ORDERWATCH_THRESHOLD_SILENT_FAST_CARRIERS names unknown "
                              f"carriers {', '.join(unknown)} (known: {known})")


DEFAULT_THRESHOLDS = Thresholds()


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    # Orders are spread over this many keyed shards; a shard is the unit of Bytewax state.
    order_shards: int = 16
    aggregate_shards: int = 4
    # Out-of-order tolerance: timers fire only when event time is this far past them.
    allowed_lateness_s: float = 5 * MINUTE
    # A finished order stays this long (event time) to absorb redeliveries, then leaves.
    finished_retention_s: float = 1 * HOUR
    # Any order silent this long (event time) leaves memory whatever its status.
    max_idle_s: float = 14 * 24 * HOUR
    source_batch_size: int = 2000
    # A record larger than this is dead-lettered rather than parsed.
    max_event_bytes: int = 1 << 20
    # Kafka in: an event whose occurred_at is further ahead of the wall clock than this is
    # a clock fault and dead-lettered, as Kafka's message.timestamp.after.max.ms (1 h)
    # refuses such messages; else event time would jump there and fire every timer
    # (0: no bound).
    max_ahead_of_wall_clock_s: float = 1 * HOUR
    # Files and the engine keep time of their own (a simulated week may lie ahead of the
    # wall clock): there an event is a clock fault when it is this far ahead of the wall
    # clock and this far past the event times of the records read with it, from their
    # median up as far as no gap exceeds this (0: no bound).
    max_ahead_of_neighbours_s: float = 24 * HOUR
    clickhouse_batch_rows: int = 20_000
    clickhouse_flush_s: float = 1.0
    # Values of one dimension (gateway, channel, warehouse, …) that get series of their
    # own: anomaly state in each aggregate shard, a Prometheus series (beyond it: "other").
    max_series_per_dimension: int = 1000

    def __post_init__(self) -> None:
        _check_values(self, "ORDERWATCH_PIPELINE_")


@dataclass(frozen=True, slots=True)
class Settings:
    clickhouse_dsn: str = "chdb://./data/orderwatch.chdb"
    clickhouse_database: str = "orderwatch"
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464
    display_timezone: str = "Asia/Shanghai"
    language: str = "zh"
    robots_file: str = ""  # robots and routes (alerts/robots.example.yml); "" = console only
    state_dir: str = "./data/state"  # robot outbox, relay state
    thresholds: Thresholds = field(default_factory=Thresholds)
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)

    def __post_init__(self) -> None:
        _check_values(self, "ORDERWATCH_")
        if self.language not in LANGUAGES:
            raise ConfigError(f"ORDERWATCH_LANGUAGE {self.language!r} is not one of "
                              f"{', '.join(LANGUAGES)}")
        try:
            zone(self.display_timezone)  # what every time shown goes through
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"ORDERWATCH_DISPLAY_TIMEZONE {self.display_timezone!r} is not an "
                              "IANA time zone (e.g. Asia/Shanghai, UTC)") from None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from `ORDERWATCH_*` variables, then explicit overrides.

        Example: ORDERWATCH_CLICKHOUSE_DSN=http://ch:8123/orderwatch,
        ORDERWATCH_THRESHOLD_CALLBACK_LOST_AFTER_S=300.
        """
        env = dict(os.environ if env is None else env)
        top: dict[str, object] = {}
        for f in fields(cls):
            if f.name in ("thresholds", "pipeline"):
                continue
            key = f"ORDERWATCH_{f.name.upper()}"
            if key in env:
                top[f.name] = _coerce(env[key], f.type, key)
        thresholds = _section_from_env(Thresholds(), env, "ORDERWATCH_THRESHOLD_")
        pipeline = _section_from_env(PipelineSettings(), env, "ORDERWATCH_PIPELINE_")
        settings = cls(thresholds=thresholds, pipeline=pipeline, **top)  # type: ignore[arg-type]
        return replace(settings, **overrides) if overrides else settings


def _section_from_env(section, env: dict[str, str], prefix: str):
    """The section with the prefix's variables applied. Under these prefixes a name that
    is no setting is a typo, and the default it leaves would pass unnoticed."""
    known = {prefix + f.name.upper(): f for f in fields(section)}
    for key in sorted(k for k in env if k.startswith(prefix) and k not in known):
        # compared without the prefix, which every candidate shares
        close = difflib.get_close_matches(key.removeprefix(prefix),
                                          [k.removeprefix(prefix) for k in known], n=1)
        raise ConfigError(f"{key} is not a setting" + (
            f"; did you mean {prefix}{close[0]}?" if close else
            f" (the names are {type(section).__name__}'s fields in orderwatch/config.py)"))
    changes = {f.name: _coerce(env[key], f.type, key) for key, f in known.items() if key in env}
    return replace(section, **changes) if changes else section


def _coerce(raw: str, type_name: object, key: str) -> object:
    kind = str(type_name)
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind.startswith("tuple"):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError as exc:
        raise ConfigError(f"{key}={raw!r} is not a valid {kind}") from exc
    return raw
