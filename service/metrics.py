"""Prometheus metrics, in a registry of the app's own (so several apps in one process stay apart)."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

from service.batching import BatchStats

# Set (by ``python -m service --workers N``) before the workers start: their metrics then meet in that folder.
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    """Requests by outcome, inferences, batch sizes, queue and compute time; labelled by model and version."""

    def __init__(self) -> None:
        self.multiprocess = MULTIPROCESS_ENV in os.environ
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "attention_serve_requests", "Inference requests by outcome",
            ["model", "version", "protocol", "outcome"], registry=self.registry,
        )  # fmt: skip
        self.request_seconds = Histogram(
            "attention_serve_request_duration_seconds", "Time from decoded request to encoded response",
            ["model", "protocol"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.inferences = Counter(
            "attention_serve_inference_count", "Sequences run through the model", ["model", "version"],
            registry=self.registry,
        )  # fmt: skip
        self.batches = Histogram(
            "attention_serve_batch_size", "Sequences per ONNX Runtime call", ["model", "version"],
            buckets=BATCH_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.queue_seconds = Histogram(
            "attention_serve_queue_seconds", "Time a sequence waited before its batch ran", ["model", "version"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.compute_seconds = Histogram(
            "attention_serve_compute_seconds", "Time of one batch: padding, ONNX Runtime, splitting",
            ["model", "version"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.failed_batches = Counter(
            "attention_serve_failed_batches", "Batches whose inference raised", ["model", "version"],
            registry=self.registry,
        )  # fmt: skip
        self.in_progress = Gauge(
            "attention_serve_requests_in_progress", "Inference requests being served", ["protocol"],
            registry=self.registry, multiprocess_mode="livesum",
        )  # fmt: skip
        self.queue_depth = Gauge(
            "attention_serve_queue_depth", "Sequences waiting", ["model", "version"],
            registry=self.registry, multiprocess_mode="livesum",
        )  # fmt: skip
        self.model_ready = Gauge(
            "attention_serve_model_ready", "1 when the version serves", ["model", "version"],
            registry=self.registry, multiprocess_mode="livemax",
        )  # fmt: skip

    def observe_batch(self, model: str, version: str, stats: BatchStats) -> None:
        self.inferences.labels(model, version).inc(stats.size)
        self.batches.labels(model, version).observe(stats.size)
        self.compute_seconds.labels(model, version).observe(stats.compute_s)
        queue = self.queue_seconds.labels(model, version)
        for waited in stats.queue_s:
            queue.observe(waited)
        if stats.failed:
            self.failed_batches.labels(model, version).inc()

    def render(self) -> bytes:
        """The exposition text; with several workers, every worker's values added up."""
        if not self.multiprocess:
            return bytes(generate_latest(self.registry))
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return bytes(generate_latest(registry))
