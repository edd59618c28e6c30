"""Prometheus metrics of one gateway: requests, refusals by reason, latency, alarms."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


@dataclass(frozen=True)
class GatewayMetrics:
    registry: CollectorRegistry
    requests: Counter
    refusals: Counter
    latency: Histogram
    alarms: Counter

    @classmethod
    def create(cls) -> GatewayMetrics:
        registry = CollectorRegistry(auto_describe=True)
        return cls(
            registry=registry,
            requests=Counter(
                "bastion_gateway_requests", "Requests by model and outcome.", ["model", "outcome"], registry=registry
            ),
            refusals=Counter(
                "bastion_gateway_refusals", "Refused requests by reason.", ["reason"], registry=registry
            ),
            latency=Histogram(
                "bastion_gateway_latency_seconds", "Time from request to answer.", ["model"],
                buckets=LATENCY_BUCKETS, registry=registry,
            ),
            alarms=Counter(
                "bastion_gateway_alarms", "Detector alarms by kind and action.", ["kind", "action"], registry=registry
            ),
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
