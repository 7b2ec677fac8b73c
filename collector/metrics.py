"""The collector's Prometheus metrics, on a registry the caller owns (one per test)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from collector.decode import Reason


class ReceivedCounts(Collector):
    """`wattfleet_collector_messages_received_total` by topic kind, counted in plain
    ints by the one thread that receives and read at scrape time. A prometheus Counter
    takes a lock on every increment: at tens of thousands of messages a second that
    was a few percent of the collector's CPU."""

    KINDS = ("telemetry", "status", "inventory", "other")

    def __init__(self, registry: CollectorRegistry) -> None:
        self._counts = dict.fromkeys(self.KINDS, 0)
        registry.register(self)

    def count(self, kind: str) -> None:
        """Counts one message; only ever called from the network thread."""
        self._counts[kind if kind in self._counts else "other"] += 1

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "wattfleet_collector_messages_received",
            "MQTT messages received, by topic kind.",
            labels=["kind"],
        )
        for kind, count in self._counts.items():
            family.add_metric([kind], count)
        yield family


class CollectorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.messages_received_total = ReceivedCounts(registry)
        self.samples_written_total = Counter(
            "wattfleet_collector_samples_written_total",
            "Telemetry rows inserted.",
            registry=registry,
        )
        self.samples_duplicate_total = Counter(
            "wattfleet_collector_samples_duplicate_total",
            "Samples already stored (redeliveries, replays), skipped by the idempotent insert.",
            registry=registry,
        )
        self.inventory_history_pruned_total = Counter(
            "wattfleet_collector_inventory_history_pruned_total",
            "Inventory history rows dropped, oldest first, to keep a node's bound.",
            registry=registry,
        )
        self.dead_letters_total = Counter(
            "wattfleet_collector_dead_letters_total",
            "Payloads or samples quarantined in dead_letters, by reason.",
            ["reason"],
            registry=registry,
        )
        for reason in Reason:
            self.dead_letters_total.labels(reason.value)
        self.batch_size = Histogram(
            "wattfleet_collector_batch_messages",
            "Messages committed per batch.",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
            registry=registry,
        )
        self.commit_seconds = Histogram(
            "wattfleet_collector_commit_seconds",
            "Time to decode, write and commit one batch (the round trip to the writer process).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.lag_seconds = Histogram(
            "wattfleet_collector_end_to_end_lag_seconds",
            "From each node's newest live sample in a batch to the batch's commit.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=registry,
        )
        self.confirmations_total = Counter(
            "wattfleet_collector_confirmations_total",
            "Ingest confirmations published to nodes (nodes/<id>/ingested), one per node"
            " per committed batch.",
            registry=registry,
        )
        self.commit_failures_total = Counter(
            "wattfleet_collector_commit_failures_total",
            "Batches whose commit failed and will be retried.",
            registry=registry,
        )
        self.queue_full_total = Counter(
            "wattfleet_collector_queue_full_total",
            "Times intake stopped reading from the broker because the in-memory queue was full.",
            registry=registry,
        )
        self.queue_depth = Gauge(
            "wattfleet_collector_queue_messages",
            "Messages received and not yet committed.",
            registry=registry,
        )
        self.database_up = Gauge(
            "wattfleet_collector_database_up",
            "1 while the last database operation succeeded.",
            registry=registry,
        )
        self.broker_connected = Gauge(
            "wattfleet_collector_broker_connected",
            "1 while connected to the broker.",
            registry=registry,
        )
        self.watchdog_runs_total = Counter(
            "wattfleet_collector_watchdog_runs_total",
            "Watchdog rounds by outcome: leader (this collector ran it), standby (another"
            " did), failed.",
            ["outcome"],
            registry=registry,
        )
        for outcome in ("leader", "standby", "failed"):
            self.watchdog_runs_total.labels(outcome)
        self.watchdog_last_run = Gauge(
            "wattfleet_collector_watchdog_last_run_timestamp_seconds",
            "When this collector last completed a watchdog round as leader.",
            registry=registry,
        )
        self.nodes = Gauge(
            "wattfleet_collector_nodes",
            "Enabled nodes by state at the last watchdog round this collector ran.",
            ["state"],
            registry=registry,
        )
        self.nodes_backlog_stuck = Gauge(
            "wattfleet_collector_nodes_backlog_stuck",
            "Nodes firing NodeBacklogStuck at the last watchdog round this collector ran.",
            registry=registry,
        )
        self.alerts_sent_total = Counter(
            "wattfleet_collector_alerts_sent_total",
            "Alerts posted to Alertmanager, firing (each re-send counts) or resolved.",
            ["state"],
            registry=registry,
        )
        self.alertmanager_errors_total = Counter(
            "wattfleet_collector_alertmanager_errors_total",
            "Alert posts Alertmanager did not take (retried next round).",
            registry=registry,
        )
