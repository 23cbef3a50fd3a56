"""The online series detector: each signal on a list of numbers, and its NAB score."""

from __future__ import annotations

import math
import random

import pytest

from orderwatch.detectors.series_anomaly import GAP, RANGE, RESTING, SHAPE, SeriesAnomaly

from conftest import SHARED


def wave(n: int, period: int = 24) -> list[float]:
    return [10 + 5 * math.sin(2 * math.pi * i / period) for i in range(n)]


def test_scoring_a_point_learns_nothing():
    d = SeriesAnomaly(warmup=10)
    for x in wave(200):
        d.update(x)
    before = (d.n, d.lo, d.hi, d.expected, dict(d.seen))
    assert d.score_one(1000.0) == RANGE
    assert (d.n, d.lo, d.hi, d.expected, d.seen) == before


def test_a_level_never_seen_scores_one_then_the_incident_rests():
    d = SeriesAnomaly(warmup=50, rest=20)
    scores = [d.update(x) for x in wave(500)]
    assert max(scores[50:]) < GAP  # a clean repeating wave raises nothing
    assert d.update(30.0) == RANGE
    after = [d.update(31.0 + i) for i in range(20)]
    assert max(after) <= RESTING  # one incident, one detection
    assert d.update(100.0) == RANGE  # the rest is over


def test_passing_the_record_by_a_hair_is_not_a_new_level():
    d = SeriesAnomaly(warmup=50)  # margin: 0.5% of the range
    for x in wave(500):
        d.update(x)
    span = d.hi - d.lo
    assert d.score_one(d.hi + 0.002 * span) < RANGE
    assert d.score_one(d.lo - 0.002 * span) < RANGE
    assert d.score_one(d.hi + 0.01 * span) == RANGE


def test_rounding_error_at_a_level_boundary_is_not_a_new_level():
    # 32 levels over [5, 15]: 12.5 is a boundary, and sin() brings it back as 12.4999…
    d = SeriesAnomaly(bins=32, warmup=50)
    scores = [d.update(x) for x in wave(500)]
    assert max(scores[50:]) < GAP


def test_a_value_where_the_series_never_goes_is_a_gap():
    d = SeriesAnomaly(warmup=50)
    rng = random.Random(5)
    for _ in range(500):  # two states: idle near 0, busy near 100
        d.update(rng.choice((0.0, 100.0)) + rng.uniform(0, 3))
    while d.quiet:  # an earlier detection's rest would cap the score
        d.update(rng.choice((0.0, 100.0)) + rng.uniform(0, 3))
    assert d.update(50.0) == GAP  # inside the range, but never seen there


def test_warm_up_scores_zero_and_memory_stays_bounded():
    rng = random.Random(3)
    d = SeriesAnomaly(bins=16, order=2, warmup=100)
    scores = [d.update(rng.gauss(0, 1) * (1 + i / 1000)) for i in range(100_000)]
    assert scores[:100] == [0.0] * 100
    assert len(d.seen) <= 16 + 16 * 16
    assert len(d.moves) <= d.shape_bins ** 2


@pytest.mark.parametrize("period", [96, 100, 90])
def test_a_flat_stretch_where_the_series_always_swings_is_a_new_shape(period):
    """Every point of the stretch is a level and a step the wave makes: only the blocks'
    move (from one block's mean to the next) is one the wave never made. Periods that
    are no multiple of the block show the wave's moves are learnt at every phase."""
    rng = random.Random(7)
    d = SeriesAnomaly()
    scores = [d.update(math.sin(2 * math.pi * i / period) + rng.gauss(0, 0.05))
              for i in range(4000)]
    assert max(scores[2000:]) < 0.5  # the wave, once learnt, raises nothing
    flat = [d.update(rng.gauss(0, 0.05)) for _ in range(60)]
    assert max(flat) == SHAPE


def test_the_detector_scores_on_the_numenta_anomaly_benchmark():
    """A regression guard at the reported figure (benchmarks/reports/nab.md)."""
    from benchmarks.nab.__main__ import run

    corpus = SHARED / "benchmarks" / "nab"
    report = run(corpus)
    assert report["profiles"]["standard"]["score"] == pytest.approx(70.4, abs=0.05)
    assert report["points"] == 365_558 and report["files"] == 58
