"""The API's Prometheus metrics, on a registry of its own (one per app instance)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "wattfleet_api_requests_total",
            "HTTP requests by route template, method and status code",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.commands = Counter(
            "wattfleet_api_commands_total",
            "Commands by type and outcome (issued, then the state they ended in)",
            ["type", "outcome"],
            registry=self.registry,
        )
        self.broker_connected = Gauge(
            "wattfleet_api_broker_connected",
            "1 while the API's MQTT connection is up",
            registry=self.registry,
        )
        self.grafana_syncs = Counter(
            "wattfleet_api_grafana_sync_total",
            "Grafana tenant sync runs by outcome (ok, failed).",
            ["outcome"],
            registry=self.registry,
        )
