"""NAB scoring, written from the benchmark's published method (Lavin & Ahmad, 2015).

- Each labelled anomaly has a window (10% of the file's length over its number of
  anomalies, as given in `combined_windows.json`). The first 15% of a file, at most 750
  points, is a probationary period and is not scored.
- A detection inside a window earns the scaled sigmoid of its position:
  `2·σ(−5·y) − 1` with y = −1 at the window's left edge. So an early detection scores
  almost 1 and one at the right edge almost 0. Scores are normalized so the earliest
  point earns the profile's TP weight. Only each window's best (earliest) detection
  counts. A window without one costs the FN weight.
- A detection outside a window costs the FP weight times the sigmoid of its distance
  past the previous window, relative to that window's width (−1 before any window, or
  3 widths past one).
- A detector outputs a score per point; one threshold per cost profile, optimized over
  the whole corpus, turns scores into detections. The corpus total is normalized so
  the null detector (no detections) scores 0 and a perfect one 100.
"""

from __future__ import annotations

import bisect
import csv
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

PROBATION_SHARE = 0.15
BEFORE_ANY_WINDOW = 3.0  # relative distance of a point before the first window


def scaled_sigmoid(position: float) -> float:
    if position >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


MAX_TP = scaled_sigmoid(-1.0)


@dataclass(frozen=True)
class Profile:
    name: str
    tp: float
    fp: float
    fn: float


@dataclass
class DataFile:
    name: str  # e.g. "realKnownCause/nyc_taxi.csv"
    timestamps: list[datetime]
    values: list[float]
    windows: list[tuple[int, int]]  # (first index, last index) of each anomaly window

    @property
    def probation(self) -> int:
        n = len(self.values)
        return int(min(math.floor(PROBATION_SHARE * n), PROBATION_SHARE * 5000))


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.strip())


def load_corpus(root: Path) -> list[DataFile]:
    windows = json.loads((root / "labels" / "combined_windows.json").read_text())
    files = []
    for name in sorted(windows):
        with (root / "data" / name).open() as f:
            rows = list(csv.DictReader(f))
        timestamps = [_parse_time(r["timestamp"]) for r in rows]
        index = {t: i for i, t in enumerate(timestamps)}
        spans = [(index[_parse_time(a)], index[_parse_time(b)]) for a, b in windows[name]]
        files.append(DataFile(name, timestamps, [float(r["value"]) for r in rows], spans))
    return files


def load_profiles(root: Path) -> list[Profile]:
    raw = json.loads((root / "profiles.json").read_text())
    return [Profile(name, c["CostMatrix"]["tpWeight"], c["CostMatrix"]["fpWeight"],
                    c["CostMatrix"]["fnWeight"]) for name, p in raw.items()
            for c in [p]]


def point_weights(data: DataFile, profile: Profile) -> list[tuple[float, int | None]]:
    """Per scored point: (what a detection there is worth, its window number or None).

    Probationary points are left out (the list starts after them)."""
    out: list[tuple[float, int | None]] = []
    window_of: dict[int, int] = {}
    for w, (first, last) in enumerate(data.windows):
        for i in range(first, last + 1):
            window_of[i] = w
    prev_right: int | None = None
    prev_width = 0.0
    for i in range(len(data.values)):
        w = window_of.get(i)
        if w is not None:
            first, last = data.windows[w]
            width = float(last - first + 1)
            worth = scaled_sigmoid(-(last - i + 1) / width) * profile.tp / MAX_TP
        else:
            distance = (BEFORE_ANY_WINDOW if prev_right is None
                        else abs(prev_right - i) / (prev_width - 1))
            worth = scaled_sigmoid(distance) * profile.fp
        if i >= data.probation:
            out.append((worth, w))
        if w is not None and i == data.windows[w][1]:
            prev_right, prev_width = i, float(data.windows[w][1] - data.windows[w][0] + 1)
    return out


def score_steps(data: DataFile, scores: Sequence[float],
                profile: Profile) -> tuple[list[float], list[float]]:
    """The file's raw score as a step function of the threshold.

    Returns (thresholds descending, score when detections are `score ≥ threshold`);
    above the first threshold nothing is detected.
    """
    weights = point_weights(data, profile)
    skip = data.probation
    ranked = sorted(((scores[skip + j], worth, w) for j, (worth, w) in enumerate(weights)),
                    key=lambda r: -r[0])
    windows = {w for _, w in weights if w is not None}
    best: dict[int, float] = dict.fromkeys(windows, -profile.fn)
    fp_total = 0.0
    thresholds: list[float] = []
    totals: list[float] = []
    for k, (score, worth, w) in enumerate(ranked):
        if w is None:
            fp_total += worth
        elif worth > best[w]:
            best[w] = worth
        if k + 1 == len(ranked) or ranked[k + 1][0] != score:
            thresholds.append(score)
            totals.append(fp_total + sum(best.values()))
    return thresholds, totals


def null_and_perfect(files: Sequence[DataFile], profile: Profile) -> tuple[float, float]:
    windows = sum(len({w for _, w in point_weights(f, profile) if w is not None})
                  for f in files)
    return -profile.fn * windows, profile.tp * windows


@dataclass
class ProfileResult:
    profile: str
    threshold: float
    raw: float
    normalized: float


class CorpusScore:
    """The corpus total as a function of the threshold (a sum of per-file steps)."""

    def __init__(self, files: Sequence[DataFile], scores: Sequence[Sequence[float]],
                 profile: Profile) -> None:
        self.null, self.perfect = null_and_perfect(files, profile)
        self.files = []
        for data, file_scores in zip(files, scores, strict=True):
            thresholds, totals = score_steps(data, file_scores, profile)
            self.files.append(([-t for t in thresholds], totals, null_file(data, profile)))

    def __call__(self, threshold: float) -> float:
        total = 0.0
        for negated, totals, nothing in self.files:
            k = bisect.bisect_right(negated, -threshold)  # thresholds ≥ the given one
            total += totals[k - 1] if k else nothing
        return total

    def normalize(self, raw: float) -> float:
        return 100.0 * (raw - self.null) / (self.perfect - self.null)


def optimize_local(files: Sequence[DataFile], scores: Sequence[Sequence[float]],
                   profile: Profile, start: float = 0.5,
                   tolerance: float = 1e-7) -> ProfileResult:
    """NAB's way: a hill-climbing search of the threshold in [0, 1] from 0.5, doubling
    the step after an improvement and halving it otherwise (a local optimum; the
    published scoreboard was made this way)."""
    score = CorpusScore(files, scores, profile)
    seen: dict[float, float] = {}

    def at(x: float) -> float:
        if x not in seen:
            seen[x] = score(x)
        return seen[x]

    x, step = start, 0.1
    best = at(x)
    while step > tolerance:
        if x + step > 1.0:
            step = abs(1.0 - x) / 2
        x += step
        if at(x) > best:
            best = at(x)
            step *= 2
            continue
        if x - 2 * step < 0.0:
            step = abs(x) / 2  # stay inside the domain
        x -= 2 * step
        if at(x) > best:
            best = at(x)
            step *= 2
        else:
            x += step
            step *= 0.5
    threshold = max(seen, key=lambda t: (seen[t], -t))
    return ProfileResult(profile.name, threshold, seen[threshold],
                         score.normalize(seen[threshold]))


def optimize(files: Sequence[DataFile], scores: Sequence[Sequence[float]],
             profile: Profile) -> ProfileResult:
    """The best threshold for the whole corpus, exactly: one sweep over every step of the
    corpus total (highest threshold first). An upper bound for the local search."""
    null, perfect = null_and_perfect(files, profile)
    running = null  # above every threshold nothing is detected
    steps: list[tuple[float, float]] = []  # (threshold, change of the corpus total)
    for data, file_scores in zip(files, scores, strict=True):
        thresholds, totals = score_steps(data, file_scores, profile)
        previous = null_file(data, profile)
        for threshold, total in zip(thresholds, totals, strict=True):
            steps.append((threshold, total - previous))
            previous = total
    steps.sort(key=lambda s: -s[0])
    best = ProfileResult(profile.name, math.inf, null, 0.0)
    i = 0
    while i < len(steps):
        threshold = steps[i][0]
        while i < len(steps) and steps[i][0] == threshold:
            running += steps[i][1]
            i += 1
        if running > best.raw:
            best = ProfileResult(profile.name, threshold, running, 0.0)
    best.normalized = 100.0 * (best.raw - null) / (perfect - null)
    return best


def null_file(data: DataFile, profile: Profile) -> float:
    return -profile.fn * len({w for _, w in point_weights(data, profile) if w is not None})


Detector = Callable[[DataFile], list[float]]
