# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``/metrics`` through prometheus-client: the store's totals and this process's latencies.

The totals (deliveries by outcome, tasks by state, task seconds) live in the database, so they
survive restarts; a collector reads them at each scrape. The latencies are histograms of this
process: HTTP answers by route, group commits and their sizes. Every service instance has a
registry of its own (never the library's global one), so tests can run several side by side.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    SummaryMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from . import __version__

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
# Seconds: an acknowledged delivery waits for one group commit (a sync of the database), so
# most answers take a millisecond or two; the tail shows queueing behind slow disks.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
GROUP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class _StoreCollector:
    """The database's totals, read at scrape time."""

    def __init__(self, totals: Callable[[], dict[str, Any]], started_at: float):
        self.totals = totals
        self.started_at = started_at

    def collect(self) -> Iterator[Any]:
        totals = self.totals()
        deliveries = CounterMetricFamily(
            "rum_pool_webhook_deliveries", "Webhook deliveries received, by outcome.",
            labels=["outcome"])
        for outcome, value in totals["deliveries"].items():
            deliveries.add_metric([outcome], value)
        yield deliveries
        tasks = GaugeMetricFamily(
            "rum_pool_webhook_tasks",
            "Tasks: queued and running now; done, skipped and failed in total.", labels=["state"])
        for state, value in totals["tasks"].items():
            tasks.add_metric([state], value)
        yield tasks
        yield SummaryMetricFamily(
            "rum_pool_webhook_task_seconds", "Time spent running tasks (every attempt).",
            count_value=totals["task_seconds_count"], sum_value=totals["task_seconds_sum"])
        yield GaugeMetricFamily("rum_pool_webhook_start_time_seconds",
                                "When the service started (Unix time).", value=self.started_at)
        yield InfoMetricFamily("rum_pool_webhook", "The service version.",
                               value={"version": __version__})


class Metrics:
    """The registry of one service instance and the instruments the code observes."""

    def __init__(self, totals: Callable[[], dict[str, Any]], started_at: float):
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_StoreCollector(totals, started_at))  # type: ignore[arg-type]
        self.request_seconds = Histogram(
            "rum_pool_webhook_request_seconds", "Time to answer an HTTP request, by route.",
            ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.commit_seconds = Histogram(
            "rum_pool_webhook_commit_seconds",
            "Time to write and sync one group commit of the database.",
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.commit_group = Histogram(
            "rum_pool_webhook_commit_group_size", "Changes written by one group commit.",
            buckets=GROUP_BUCKETS, registry=self.registry)
        self.inflight_bytes = Gauge(
            "rum_pool_webhook_inflight_body_bytes",
            "Request body bytes being received now (admitted against the in-flight limit).",
            registry=self.registry)
        self.refused = Counter(
            "rum_pool_webhook_requests_refused", "Requests cut short before their body was "
            "read, by reason.", ["reason"], registry=self.registry)
        self.redeliveries = Counter(
            "rum_pool_webhook_redeliveries", "Redeliveries of failed deliveries asked of GitHub.",
            registry=self.registry)
        self.reconciles = Counter(
            "rum_pool_webhook_reconciles", "Reconciles of the pool queued by the service's timer.",
            registry=self.registry)

    def observe_commit(self, seconds: float, size: int) -> None:
        self.commit_seconds.observe(seconds)
        self.commit_group.observe(size)

    def render(self) -> bytes:
        return generate_latest(self.registry)
