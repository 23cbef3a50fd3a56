"""A bound on the values of one dimension that get state of their own.

Gateways, channels and warehouses are free text in the input contract. A feed that puts
an id in one of them (a store id as `channel`, a user agent) would give every order its
own series: per-series anomaly state and zero-filled minutes that never leave, and
Prometheus series without end. The first `cap` values of each dimension are kept; a value
beyond them is still counted (health_metrics rows, its share of `other` in /metrics) but
gets no series state, and a warning says so once per dimension.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

log = logging.getLogger(__name__)

DEFAULT_CAP = 1000
SETTING = "ORDERWATCH_PIPELINE_MAX_SERIES_PER_DIMENSION"
_warned: set[tuple[str, str]] = set()  # (what, dimension): once per process, not per shard


class SeriesLimit:
    def __init__(self, cap: int = DEFAULT_CAP, what: str = "series",
                 kept: Iterable[tuple[str, str]] = ()) -> None:
        """`what` names the state in the warning; `kept`: (dimension, value) pairs that
        already have state (a snapshot written before the limit existed)."""
        self.cap = cap
        self.what = what
        self.values: dict[str, set[str]] = {}
        self.refused: dict[str, int] = {}  # per dimension: values turned away
        for dimension, value in kept:
            self.values.setdefault(dimension, set()).add(value)

    def admits(self, dimension: str, value: str) -> bool:
        values = self.values.setdefault(dimension, set())
        if value in values:
            return True
        if len(values) < self.cap:
            values.add(value)
            return True
        if (self.what, dimension) not in _warned:
            _warned.add((self.what, dimension))
            log.warning("%s: %s has reached %d values (%s); further values of it get no "
                        "state of their own. Does the feed put ids in %s?", self.what,
                        dimension, self.cap, SETTING, dimension)
        self.refused[dimension] = self.refused.get(dimension, 0) + 1
        return False
