"""Reading a /metrics exposition, as Prometheus would scrape it: for the benchmarks and the
tests, which check a run through its own metrics."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def samples(body: str) -> list[Sample]:
    """Every sample of a /metrics exposition, read by prometheus_client's own parser."""
    return [s for family in text_string_to_metric_families(body) for s in family.samples]


def metric_sum(body: str, name: str, **labels: str) -> float:
    """The sum of a /metrics body's samples called `name` that carry these label values
    (0 when there are none)."""
    return sum(s.value for s in samples(body)
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def histogram(body: str, name: str) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) summed over every label set, in bound order."""
    totals: dict[float, float] = {}
    for sample in samples(body):
        if sample.name == name + "_bucket":
            bound = float(sample.labels["le"])
            totals[bound] = totals.get(bound, 0.0) + sample.value
    return sorted(totals.items())
