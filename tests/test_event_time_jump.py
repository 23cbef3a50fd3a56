"""Event time may jump decades at once: a clock fault let through (the bound off, or a
chunk whose events all carry it; `tests/test_clock_far_ahead.py` for what is refused).

That is what event time means (the timers it passes fire), but it must not cost one
step per minute passed: the zero-filled health series made 15 million cells each and
the replay was killed for memory; the payment backlog stepped through every minute.
"""

from __future__ import annotations

import random

import orjson

from orderwatch.detectors.health_metrics import ZERO_FILL_MINUTES, HealthMetrics
from orderwatch.detectors.payment_backlog import PendingPaymentBacklog

from conftest import T0, orderwatch

MIN = 60
YEARS_30 = 30 * 365 * 24 * 3600.0


def test_a_rare_series_is_zero_filled_for_a_day_after_its_last_count_not_for_ever():
    metrics = HealthMetrics()
    minute = int(T0 // MIN)
    metrics.merge({(minute, "dead_letters", "reason", "not_json"): [2.0]})
    points = metrics.close(T0 + YEARS_30)
    zeros = [p for p in points if p.metric == "dead_letters" and p.value == 0]
    assert len(zeros) == ZERO_FILL_MINUTES  # a day of quiet minutes, then a gap
    assert metrics.rare == {}  # forgotten until it counts again
    metrics.merge({(int((T0 + YEARS_30) // MIN) + 5, "dead_letters", "reason", "not_json"):
                   [1.0]})
    later = metrics.close(T0 + YEARS_30 + 10 * MIN)
    assert [p.value for p in later if p.metric == "dead_letters"] == [1.0, 0, 0, 0, 0]


def backlog_facts(seed: int) -> list[tuple[float, tuple[str, float]]]:
    """(when learnt, fact): a day of creations, most paid within minutes, some not."""
    rng = random.Random(seed)
    facts = []
    for k in range(3000):
        created = T0 + k * 30.0
        facts.append((created, ("created", created)))
        if rng.random() < 0.9 or (k > 1500 and rng.random() < 0.5):
            facts.append((created + rng.uniform(60, 3 * 3600), ("left", created)))
    return sorted(facts)


def run_backlog(facts, jump_to: float, step_s: float | None) -> list:
    """Learn the facts as event time passes them; then advance to `jump_to` in steps
    of `step_s` (None: at once)."""
    detector, alerts, now = PendingPaymentBacklog(), [], T0
    for at, fact in facts:
        if at > now:
            alerts += detector.advance(at)
            now = at
        detector.learn_one(fact, "all")
    while step_s is not None and now + step_s < jump_to:
        now += step_s
        alerts += detector.advance(now)
    alerts += detector.advance(jump_to)
    return [(a.status, a.starts_at, a.ends_at, a.value) for a in alerts]


def test_the_backlog_over_a_long_gap_says_what_stepping_minute_by_minute_says():
    for seed in (1, 2):
        facts = backlog_facts(seed)
        end = facts[-1][0] + 4 * 24 * 3600.0
        stepped = run_backlog(facts, end, MIN)
        assert stepped, "the backlog fires and resolves in this data"
        assert run_backlog(facts, end, None) == stepped


def test_the_backlog_judges_only_the_minutes_where_its_window_changes_over_a_gap():
    detector = PendingPaymentBacklog()
    for _, fact in backlog_facts(3):
        detector.learn_one(fact, "all")
    boundaries = list(detector._boundaries(int(T0 // MIN), int((T0 + YEARS_30) // MIN)))
    assert len(boundaries) <= 2 * 1500 + 2  # two per creation minute, not 15 million


def test_a_replay_with_an_event_thirty_years_ahead_finishes(tmp_path):
    events = tmp_path / "events.jsonl"
    result = orderwatch("simulate", "--out", str(events), "--orders", "300", "--faults",
                        "malformed_events,double_click_ship", "--seed", "5")
    assert result.returncode == 0, result.stderr
    lines = events.read_bytes().splitlines()
    future = orjson.loads(lines[len(lines) // 2])
    future.update(event_id="future-1", occurred_at="2056-02-23T10:00:00+08:00")
    lines.insert(len(lines) // 2 + 1, orjson.dumps(future))
    events.write_bytes(b"\n".join(lines) + b"\n")
    result = orderwatch("replay", str(events), "--data", str(tmp_path / "d"),
                        "--alerts-out", str(tmp_path / "alerts.jsonl"), timeout=300,
                        env={"ORDERWATCH_PIPELINE_MAX_AHEAD_OF_NEIGHBOURS_S": "0"})
    assert result.returncode == 0, result.stderr
    assert "event time reached 2056-02-23T10:00:00+08:00" in result.stdout
