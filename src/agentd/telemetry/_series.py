"""Counters and histograms cheap enough to move on every event of every turn.

``prometheus_client``'s ``Counter`` and ``Histogram`` take a lock, check the metric
is observable and walk their buckets on each ``inc`` and ``observe``: about a
microsecond a call, some twenty calls a turn, and the event follower around them came
to about a seventh of the instructions of a durable echo turn (docs/benchmarks.md,
"The durable echo path"). Here a series (one combination of label values) is a small
object whose ``inc`` adds to an attribute and whose ``observe`` bisects a tuple; the
families are rendered at scrape time by a collector registered in the metrics'
registry, in the same text ``prometheus_client`` writes for its own (``_total``,
``_bucket``/``_count``/``_sum`` and ``_created`` samples).

Updates come from the event loop, but for the store's commit hook, which the SQLite
writer's thread calls at ``synchronous = FULL`` (the only writer of those two
series). A scrape reads a histogram's counts as a copy: it may see an observation's
count without its sum, never a count go backwards.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

__all__ = ["CounterSeries", "Families", "FastCounter", "FastHistogram", "HistogramSeries"]


def _le(bound: float) -> str:
    """A bucket's ``le`` label, written as prometheus_client writes it."""
    label: str = floatToGoString(bound)  # type: ignore[no-untyped-call]
    return label


class CounterSeries:
    """One counter's series: ``inc`` adds (amounts are never negative here)."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class HistogramSeries:
    """One histogram's series: a count per bucket (the last is ``+Inf``) and a sum."""

    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        # The first bound at or above the value: its bucket is "le" that bound.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class FastCounter:
    """A counter family: its series by label values, made on first use."""

    def __init__(self, name: str, documentation: str,
                 labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._series: dict[tuple[str, ...], CounterSeries] = {}
        if not self.labelnames:
            self._series[()] = CounterSeries()

    def labels(self, *values: str) -> CounterSeries:
        series = self._series.get(values)
        if series is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name} takes {len(self.labelnames)} labels")
            series = self._series[values] = CounterSeries()
        return series

    def inc(self, amount: float = 1.0) -> None:
        self._series[()].inc(amount)

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation,
                                     labels=list(self.labelnames))
        for values, series in list(self._series.items()):
            family.add_metric(list(values), series.value, created=series.created)
        return family


class FastHistogram:
    """A histogram family with fixed bucket bounds (``+Inf`` added)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (),
                 *, buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.bounds = tuple(float(b) for b in buckets if b != float("inf"))
        if list(self.bounds) != sorted(set(self.bounds)):
            raise ValueError(f"{name}: buckets must be in increasing order")
        self._series: dict[tuple[str, ...], HistogramSeries] = {}
        if not self.labelnames:
            self._series[()] = HistogramSeries(self.bounds)

    def labels(self, *values: str) -> HistogramSeries:
        series = self._series.get(values)
        if series is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name} takes {len(self.labelnames)} labels")
            series = self._series[values] = HistogramSeries(self.bounds)
        return series

    def observe(self, value: float) -> None:
        self._series[()].observe(value)

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation,
                                       labels=list(self.labelnames))
        created: list[Sample] = []
        for values, series in list(self._series.items()):
            counts, total = list(series.counts), series.sum
            running, buckets = 0, []
            for bound, count in zip((*self.bounds, float("inf")), counts, strict=True):
                running += count
                buckets.append((_le(bound), float(running)))
            family.add_metric(list(values), buckets, total)
            created.append(Sample(self.name + "_created",
                                  dict(zip(self.labelnames, values, strict=True)),
                                  series.created))
        family.samples.extend(created)
        return family


class Families(Collector):
    """The fast families, rendered in the order they were made."""

    def __init__(self) -> None:
        self._families: list[FastCounter | FastHistogram] = []

    def counter(self, name: str, documentation: str,
                labelnames: Sequence[str] = ()) -> FastCounter:
        made = FastCounter(name, documentation, labelnames)
        self._families.append(made)
        return made

    def histogram(self, name: str, documentation: str, labelnames: Sequence[str] = (),
                  *, buckets: Sequence[float]) -> FastHistogram:
        made = FastHistogram(name, documentation, labelnames, buckets=buckets)
        self._families.append(made)
        return made

    def collect(self) -> Iterator[Metric]:
        for made in self._families:
            yield made.family()
