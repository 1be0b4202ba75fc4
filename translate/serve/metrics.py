"""The server's Prometheus metrics (``GET /metrics``), on a registry of its own per app.

prometheus_client (a small, dependency-free package kept by the Prometheus project) writes the text
format, escapes labels and keeps histograms thread-safe; the inference thread observes batch sizes
while the event loop counts requests.
"""
from __future__ import annotations

from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
ENDPOINTS = ("/v1/translate", "/v1/translate/batch", "/v1/model", "/healthz", "/metrics", "/")


def batch_buckets(max_batch: int) -> list[float]:
    """Every size up to 16, then powers of two: exact counts for the sizes that matter."""
    sizes = set(range(1, min(max_batch, 16) + 1))
    p = 32
    while p < max_batch:
        sizes.add(p)
        p *= 2
    sizes.add(max_batch)
    return sorted(float(s) for s in sizes)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, max_batch: int, queue_depth: Callable[[], float]) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("translate_requests", "HTTP requests answered, by endpoint and status code",
                                ["endpoint", "status"], registry=r)
        self.errors = Counter("translate_errors", "Requests refused or failed, by kind of error", ["kind"],
                              registry=r)
        self.latency = Histogram("translate_request_duration_seconds", "Time from request to response, by endpoint",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("translate_batch_size", "Images per inference call (dynamic batching)",
                                    buckets=batch_buckets(max_batch), registry=r)
        self.inference = Histogram("translate_inference_duration_seconds", "Time of one inference call",
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.images = Counter("translate_images", "Images translated", registry=r)
        self.in_flight = Gauge("translate_requests_in_flight", "Requests being answered", registry=r)
        self.queue_depth = Gauge("translate_queue_depth", "Images waiting for an inference call", registry=r)
        self.queue_depth.set_function(queue_depth)

    @staticmethod
    def endpoint(path: str) -> str:
        """A bounded label: the route, or "other" (404s must not add a series per probed path)."""
        return path if path in ENDPOINTS else "other"

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference.observe(seconds)
        self.images.inc(size)

    def render(self) -> bytes:
        return generate_latest(self.registry)
