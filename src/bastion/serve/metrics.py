"""Prometheus metrics of one gateway: requests, refusals by reason, latency, alarms.

Answered requests and their latency are counted on every request, so they are plain integers
on the event loop's thread (`AnsweredCounts`), turned into Prometheus families only when
`/metrics` is scraped: a `prometheus_client` counter and histogram take a lock each and cost
more than the rest of the request's bookkeeping. Refusals and alarms are rare and use the
client's own counters.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


@dataclass
class ModelCounts:
    """One model's answered requests: a count and a latency histogram (per bucket, not cumulative)."""

    answered: int = 0
    latency_sum: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))  # the last is +Inf

    def observe(self, seconds: float) -> None:
        self.answered += 1
        self.latency_sum += seconds
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1


class AnsweredCounts(Collector):
    """Answered requests per model, exported as `bastion_gateway_requests_total{outcome="ok"}` and
    `bastion_gateway_latency_seconds`. Written from the event loop only; read at scrape time."""

    def __init__(self) -> None:
        self.models: dict[str, ModelCounts] = {}

    def of(self, model: str) -> ModelCounts:
        return self.models.setdefault(model, ModelCounts())

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "bastion_gateway_requests", "Requests by model and outcome.", labels=["model", "outcome"]
        )
        latency = HistogramMetricFamily(
            "bastion_gateway_latency_seconds", "Time from request to answer.", labels=["model"]
        )
        for model, counts in sorted(self.models.items()):
            snapshot = list(counts.buckets)  # the loop may add while this runs: read once
            requests.add_metric([model, "ok"], counts.answered)
            cumulative, running = [], 0
            for bound, count in zip((*map(str, LATENCY_BUCKETS), "+Inf"), snapshot, strict=True):
                running += count
                cumulative.append((bound, float(running)))
            latency.add_metric([model], cumulative, counts.latency_sum)
        yield requests
        yield latency


@dataclass(frozen=True)
class GatewayMetrics:
    registry: CollectorRegistry
    answered: AnsweredCounts
    refusals: Counter
    alarms: Counter

    @classmethod
    def create(cls) -> GatewayMetrics:
        registry = CollectorRegistry(auto_describe=True)
        answered = AnsweredCounts()
        registry.register(answered)
        return cls(
            registry=registry,
            answered=answered,
            refusals=Counter(
                "bastion_gateway_refusals", "Refused requests by reason.", ["reason"], registry=registry
            ),
            alarms=Counter(
                "bastion_gateway_alarms", "Detector alarms by kind and action.", ["kind", "action"], registry=registry
            ),
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
