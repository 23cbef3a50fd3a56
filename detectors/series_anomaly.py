"""An online anomaly detector for one numeric series: one pass, no look-ahead, bounded memory.

Four signals, each cheap enough for a few microseconds a point, folded into one score
in [0, 1]:

- **range** (score 1.0): after a warm-up, a value beyond every value seen so far by more
  than `margin` of the range. Most failures of a health series begin as a level nobody
  has seen (a success ratio below its worst minute so far, a wait above its longest).
  A value that passes the record by a hair is the same level, not a new one; it is
  judged like any value inside the range.
- **gap** (0.99): the value, quantized on the range seen so far into `bins` levels, lands
  in a level never visited, reached from a level it never came from. It catches a value
  inside the range where the series never goes: between the two states of a bimodal
  series, a dip halfway down. The table of level sequences holds at most
  bins + bins**order entries.
- **shape** (0.98): the series is cut into blocks of `block` points; each block's mean,
  quantized on the range into `shape_bins` levels, and the previous block's make a move.
  A move far from every move seen before (no known move within one level on either
  side) is a shape the series never had: a flat stretch where it always swings, a daily
  peak lower than on any day before. It sees what a single point cannot, and the
  tolerance of one level keeps a move that merely crosses a level boundary from counting
  as new. The table holds at most shape_bins**2 moves.
- **jump** (below 0.9): the distance from an exponentially weighted mean in units of the
  weighted standard deviation, squashed as z / (z + 5).

After a range, gap or shape detection, the next `rest` points score at most 0.5, so one
incident raises one detection rather than a burst.

`score_one(x)` judges a point without learning it; `learn_one(x)` learns it (River's
protocol); `update(x)` does both and returns the score. Scored on the Numenta Anomaly
Benchmark by `python -m benchmarks.nab`.
"""

from __future__ import annotations

import math

RANGE = 1.0
GAP = 0.99
SHAPE = 0.98
JUMP_CEILING = 0.9
RESTING = 0.5


class SeriesAnomaly:
    __slots__ = ("_block_n", "_block_sum", "_last", "_last_block", "_m", "_v", "_z_half",
                 "alpha", "bins", "block", "hi", "lo", "margin", "moves", "n", "order", "quiet",
                 "rest", "seen", "shape_bins", "warmup")

    def __init__(self, bins: int = 16, order: int = 2, alpha: float = 0.05,
                 warmup: int = 150, rest: int = 30, z_half: float = 5.0,
                 margin: float = 0.005, block: int = 12, shape_bins: int = 24) -> None:
        self.bins = bins
        self.block = block
        self.shape_bins = shape_bins
        self.margin = margin
        self.order = order
        self.alpha = alpha
        self.warmup = warmup
        self.rest = rest
        self._z_half = z_half
        self.n = 0
        self.lo = math.inf
        self.hi = -math.inf
        self._m = 0.0
        self._v = 0.0
        self._last: tuple[int, ...] = ()  # the latest order-1 levels
        self.seen: dict[tuple[int, ...], int] = {}
        self._block_sum = 0.0
        self._block_n = 0
        self._last_block = -1  # the previous block's level, -1 before the first block
        self.moves: set[tuple[int, int]] = set()  # (previous block's level, this block's)
        self.quiet = 0

    @property
    def expected(self) -> float:
        """What the detector expected next: the weighted mean."""
        return self._m

    @staticmethod
    def _level(x: float, lo: float, hi: float, bins: int) -> int:
        span = hi - lo
        if span <= 0:
            return 0
        level = int((x - lo) / span * bins + 1e-9)  # rounding error at a boundary
        return min(max(level, 0), bins - 1)

    def _new_shape(self, x: float) -> bool:
        """Whether `x` ends a block (after the first) whose move from the previous block's
        level is new: no known move within one level on either side."""
        if self._block_n + 1 < self.block or self._last_block < 0:
            return False
        mean = (self._block_sum + x) / self.block
        b = self._level(mean, min(self.lo, x), max(self.hi, x), self.shape_bins)
        a = self._last_block
        moves = self.moves
        return not any((a + da, b + db) in moves for da in (-1, 0, 1) for db in (-1, 0, 1))

    def score_one(self, x: float) -> float:
        """The anomaly score of `x` as the next point, in [0, 1]; learns nothing."""
        if self.n < self.warmup:
            return 0.0
        lo, hi = self.lo, self.hi
        margin = self.margin * (hi - lo)
        if x > hi + margin or x < lo - margin:
            score = RANGE
        else:
            level = self._level(x, lo, hi, self.bins)
            grams = (*self._last, level)
            novel = all(grams[i:] not in self.seen for i in range(len(grams)))
            if novel and len(grams) == self.order:  # the level and the step both new
                score = GAP
            elif self._new_shape(x):
                score = SHAPE
            else:
                z = self.deviation(x)
                score = JUMP_CEILING * z / (z + self._z_half)
        return min(score, RESTING) if self.quiet else score

    def deviation(self, x: float) -> float:
        """|x − expected| in weighted standard deviations (a floor of 0.1% of the level)."""
        return abs(x - self._m) / (math.sqrt(self._v) + 1e-9 + 1e-3 * abs(self._m))

    def learn_one(self, x: float) -> None:
        self.n += 1
        if x < self.lo:
            self.lo = x
        if x > self.hi:
            self.hi = x
        self._block_sum += x
        self._block_n += 1
        if self._block_n == self.block:
            level = self._level(self._block_sum / self.block, self.lo, self.hi,
                                self.shape_bins)
            if self._last_block >= 0:
                self.moves.add((self._last_block, level))
            self._last_block = level
            self._block_sum = 0.0
            self._block_n = 0
        level = self._level(x, self.lo, self.hi, self.bins)
        grams = (*self._last, level)
        seen = self.seen
        for i in range(len(grams)):
            key = grams[i:]
            seen[key] = seen.get(key, 0) + 1
        self._last = grams[1:] if len(grams) == self.order else grams
        if self.n == 1:
            self._m = x
        d = x - self._m
        self._m += self.alpha * d
        self._v = (1 - self.alpha) * (self._v + self.alpha * d * d)

    def update(self, x: float) -> float:
        """Score `x`, then learn it; starts a rest period after a range, gap or shape hit."""
        score = self.score_one(x)
        if self.quiet:
            self.quiet -= 1
        elif score >= SHAPE:
            self.quiet = self.rest
        self.learn_one(x)
        return score
