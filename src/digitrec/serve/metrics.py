"""Prometheus metrics through prometheus_client.  Under `--workers N` every process writes its samples to
PROMETHEUS_MULTIPROC_DIR (set by `serve` before the workers start) and a scrape of any worker sums them all.

Every label value comes from a fixed set (issue 11: 2,000 random HTTP methods once made 2,000 series):
methods from METHODS or "other", routes from the app's route templates or "unmatched", digits 0-9, verdicts
from VERDICTS, statuses as numbers (a bounded set that the server itself produces).
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from digitrec.inference.calibration import VERDICTS

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
LATENCY = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUEST_SECONDS = Histogram("digitrec_http_request_duration_seconds", "HTTP request duration.",
                            ["method", "route", "status"], buckets=LATENCY)
IN_FLIGHT = Gauge("digitrec_http_requests_in_flight", "HTTP requests being served.", multiprocess_mode="livesum")
REJECTED = Counter("digitrec_http_requests_rejected_total",
                   "Requests refused with 503: past --max-concurrency, or no request thread free in time.")
DECODE_SECONDS = Histogram("digitrec_decode_seconds", "Preparing one image (decode, ink, 28x28) in a worker process.",
                           buckets=LATENCY)
DECODERS_REPLACED = Counter("digitrec_decode_workers_replaced_total",
                            "Decoding processes killed (deadline, memory, client gone) or retired, and restarted.")
INFERENCE_SECONDS = Histogram("digitrec_inference_seconds", "One model call.", buckets=LATENCY)
BATCH_SIZE = Histogram("digitrec_batch_size", "Images in one model call.", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
PREDICTIONS = Counter("digitrec_predictions_total", "Images answered, by digit (or none) and verdict.",
                      ["digit", "verdict"])


def method_label(method: str) -> str:
    return method if method in METHODS else "other"


def count_prediction(digit, verdict) -> None:
    PREDICTIONS.labels("none" if digit is None else str(int(digit) % 10),
                       verdict if verdict in VERDICTS else "error").inc()


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
