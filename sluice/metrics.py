"""Prometheus metrics at ``GET /metrics`` (``prometheus_client``).

With several gunicorn workers, set ``PROMETHEUS_MULTIPROC_DIR`` (the shipped
gunicorn config does when ``WEB_CONCURRENCY`` > 1): every worker writes its
values there and ``/metrics`` sums them, whichever worker answers. The
registry belongs to the app, not to the module, so apps (and tests) never
share counters. Labels are bounded: ``model`` is only recorded for models that
produced a token, never for whatever name a client made up.
"""

from __future__ import annotations

import hmac
import os
import time
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from .errors import Unauthorized
from .tasks import Task, spawn

__all__ = ["Metrics", "bp", "init_app"]

bp = Blueprint("metrics", __name__)

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
_DURATION_BUCKETS = (0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800)
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
# How often the loop watcher samples the event loop's lag (and flushes the event count).
LOOP_SAMPLE_S = 0.5


class Metrics:
    """The gateway's counters, gauges and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.active_streams = Gauge(
            "sluice_active_streams", "Generations running now.", registry=r, multiprocess_mode="livesum"
        )
        self.streams_started = Counter("sluice_streams_started", "Generations started.", ["provider"], registry=r)
        self.streams_finished = Counter(
            "sluice_streams_finished", "Generations ended, by outcome.", ["provider", "outcome"], registry=r
        )
        self.time_to_first_token = Histogram(
            "sluice_time_to_first_token_seconds",
            "From start to the first token.",
            ["provider", "model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.stream_duration = Histogram(
            "sluice_stream_duration_seconds",
            "From start to the end of a generation.",
            ["provider", "model"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.tokens = Counter("sluice_tokens_relayed", "Text pieces relayed from providers.", ["provider"], registry=r)
        self.upstream_errors = Counter(
            "sluice_upstream_errors", "Generations that ended in an error, by code.", ["provider", "code"], registry=r
        )
        self.http_errors = Counter("sluice_http_errors", "Error responses, by code.", ["code"], registry=r)
        self.embeddings = Counter(
            "sluice_embeddings",
            "Embedding requests, by provider and outcome (ok or an error code).",
            ["provider", "outcome"],
            registry=r,
        )
        self.rate_limited = Counter("sluice_rate_limited", "Requests refused by a rate or stream limit.", registry=r)
        self.events = Counter("sluice_events_published", "Events of all generations (start, deltas, end).", registry=r)
        self.loop_lag = Histogram(
            "sluice_event_loop_lag_seconds",
            "How late the worker's event loop woke a sleeper (every 0.5 s).",
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        # Events are counted here, a plain int on the hot path, and added to the
        # counter by the loop watcher (or a scrape): a Counter.inc per event would
        # take a lock, or an mmap write with several workers.
        self.unflushed_events = 0
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once per label set.

        ``labels()`` validates its arguments on every call (about 3.5 µs here),
        and a stream asks five times; the label sets are few and bounded.
        """
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def flush(self) -> None:
        """Add the events counted since the last flush to the counter."""
        count, self.unflushed_events = self.unflushed_events, 0
        if count:
            self.events.inc(count)

    def watch_loop(self) -> Task:
        """Sample the event loop's lag every ``LOOP_SAMPLE_S`` for as long as the worker runs.

        A sleeper that wakes late means every stream's events went out that late:
        the same lateness the benchmark measures, seen from inside.
        """

        def watch() -> None:
            while True:
                before = time.monotonic()
                time.sleep(LOOP_SAMPLE_S)
                self.loop_lag.observe(max(0.0, time.monotonic() - before - LOOP_SAMPLE_S))
                self.flush()

        return spawn(watch)

    def exposition(self) -> bytes:
        """The text format, summed over workers in multiprocess mode."""
        self.flush()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped in prometheus_client
            return generate_latest(registry)
        return generate_latest(self.registry)


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text; with ``SLUICE_METRICS_KEY`` set, only for ``Bearer <that key>``."""
    key = current_app.config["SLUICE_METRICS_KEY"]
    if key:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
            raise Unauthorized()
    body = current_app.extensions["sluice.metrics"].exposition()
    return Response(body, mimetype=CONTENT_TYPE_LATEST.split(";")[0])


def init_app(app: Flask) -> Metrics:
    """Create the app's metrics and the route that shows them."""
    metrics_ = Metrics()
    app.extensions["sluice.metrics"] = metrics_
    app.register_blueprint(bp)
    return metrics_
