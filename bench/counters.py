"""The service's own Prometheus counters, read before and after a run: outcomes, batch sizes, queue and compute."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field

SAMPLE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")
SUMS = {
    "attention_serve_batch_size_count": "batches",
    "attention_serve_batch_size_sum": "batched_sequences",
    "attention_serve_compute_seconds_sum": "compute_s",
    "attention_serve_queue_seconds_sum": "queue_s",
    "attention_serve_queue_seconds_count": "queued_sequences",
}


@dataclass(frozen=True)
class Counters:
    values: dict[str, float] = field(default_factory=dict)

    def __add__(self, other: Counters) -> Counters:
        keys = self.values.keys() | other.values.keys()
        return Counters({k: self.values.get(k, 0.0) + other.values.get(k, 0.0) for k in keys})

    def __sub__(self, other: Counters) -> Counters:
        return Counters({k: v - other.values.get(k, 0.0) for k, v in self.values.items()})

    def summary(self) -> dict[str, float]:
        """Outcome counts, and per batch: mean size, mean compute (pad + ORT) ms, mean queue wait ms per sequence."""
        v = self.values
        batches, queued = v.get("batches", 0.0), v.get("queued_sequences", 0.0)
        return {
            **{k: v[k] for k in sorted(v) if k.startswith("outcome_")},
            "batches": batches,
            "mean_batch_size": v.get("batched_sequences", 0.0) / batches if batches else 0.0,
            "mean_compute_ms": 1000 * v.get("compute_s", 0.0) / batches if batches else 0.0,
            "mean_queue_ms": 1000 * v.get("queue_s", 0.0) / queued if queued else 0.0,
        }


def scrape(url: str) -> Counters:
    """Sum the samples we care about over every label set; an unreachable endpoint gives empty counters."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError):
        return Counters()
    values: dict[str, float] = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match is None:
            continue
        name, labels = match["name"], match["labels"] or ""
        key = SUMS.get(name)
        if name == "attention_serve_requests_total":
            outcome = re.search(r'outcome="([^"]*)"', labels)
            key = f"outcome_{outcome[1] if outcome else 'unknown'}"
        if key is not None:
            values[key] = values.get(key, 0.0) + float(match["value"])
    return Counters(values)
