"""The per-key minute counts behind `callback_failure_rate` and `lock_contention`."""

from __future__ import annotations

import math
import pickle

from orderwatch.detectors.sliding_window import SlidingCounts

MIN = 60.0


class CountingDict(dict):
    """The counts' buckets, counting the keys `windows` looks up."""

    looked_up = 0

    def get(self, key, default=None):
        CountingDict.looked_up += 1
        return super().get(key, default)


def test_windows_between_boundaries_look_only_at_new_keys():
    """`windows` runs for every event. It went through every key each time, so a feed
    with a gateway name per order made each event cost as many steps as there were
    gateways (3.5× slower over 20,000 orders)."""
    counts = SlidingCounts(5 * MIN, 1)
    for k in range(10_000):
        counts.add(f"gw{k}", 10.0, [1.0])
    assert list(counts.windows(20.0)) == []  # no boundary passed yet
    counts._buckets = CountingDict(counts._buckets)
    counts.add("late-comer", 30.0, [1.0])
    assert list(counts.windows(40.0)) == []
    assert CountingDict.looked_up <= 2  # not 10,001
    windows = list(counts.windows(MIN + 1))  # a boundary: every key has a window
    assert len(windows) == 10_001 and windows[-1] == ("late-comer", MIN, [1.0])


def test_a_key_new_between_boundaries_gets_the_windows_it_missed():
    counts = SlidingCounts(2 * MIN, 1)
    counts.add("a", 10.0, [1.0])
    assert list(counts.windows(3 * MIN + 5)) == [("a", MIN, [1.0]), ("a", 2 * MIN, [1.0]),
                                                 ("a", 3 * MIN, [0.0])]
    counts.add("b", 2 * MIN + 30, [2.0])  # arrives late, within the window still open
    counts.add("a", 3 * MIN + 10, [4.0])  # "a" left after its zero window: new again
    assert list(counts.windows(3 * MIN + 20)) == [("b", 3 * MIN, [2.0])]
    assert list(counts.windows(4 * MIN)) == [("b", 4 * MIN, [2.0]), ("a", 4 * MIN, [4.0])]


def test_next_due_is_the_next_boundary_unless_a_key_is_new():
    """What an aggregate shard asks before advancing: a late key's missed windows are due
    at once, not at the next boundary."""
    counts = SlidingCounts(2 * MIN, 1)
    assert counts.next_due() == -math.inf  # never asked: no boundary known yet
    counts.add("a", 10.0, [1.0])
    list(counts.windows(3 * MIN + 5))
    assert counts.next_due() == 4 * MIN
    assert list(counts.windows(3 * MIN + 50)) == []  # nothing before it, as said
    counts.add("b", 2 * MIN + 30, [2.0])
    assert counts.next_due() == -math.inf
    assert list(counts.windows(3 * MIN + 55)) == [("b", 3 * MIN, [2.0])]
    assert counts.next_due() == 4 * MIN


def test_counts_pickled_before_the_new_key_tracking_still_load():
    """A recovery snapshot of an older version holds no `_end` or `_new`."""
    old = SlidingCounts.__new__(SlidingCounts)
    old.__setstate__((None, {"_w": 2, "width": 1, "_buckets": {"a": {0: [1.0]}},
                             "_done": {"a": 0}}))
    assert list(old.windows(MIN)) == [("a", MIN, [1.0])]
    again = pickle.loads(pickle.dumps(old))
    again.add("b", MIN + 1, [3.0])
    assert list(again.windows(MIN + 2)) == []  # b's first boundary is still ahead
    assert list(again.windows(2 * MIN)) == [("a", 2 * MIN, [1.0]), ("b", 2 * MIN, [3.0])]
