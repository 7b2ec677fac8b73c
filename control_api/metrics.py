"""The API's Prometheus metrics, on a registry of its own (one per app instance)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

ACK_DROP_REASONS = ("malformed", "unknown_command", "refused")
# control_api/log_intake.py says what each means.
LOG_DROP_REASONS = (
    "too_large",
    "malformed",
    "no_command_id",
    "unknown_command",
    "inconsistent",
    "over_limit",
    "refused",
)
# control_api/config_intake.py says what each means.
CONFIG_REPORT_DROP_REASONS = ("too_large", "malformed", "invalid", "unknown_node", "refused")


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.requests_total = Counter(
            "wattfleet_api_requests_total",
            "HTTP requests by route template, method and status code",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.commands_total = Counter(
            "wattfleet_api_commands_total",
            "Commands by type and outcome (issued, then the state they ended in)",
            ["type", "outcome"],
            registry=self.registry,
        )
        self.acks_dropped_total = Counter(
            "wattfleet_api_acks_dropped_total",
            "Node acks dropped without changing a command, by reason: malformed (not an"
            " ack), unknown_command (not a command of that node), refused (could never be"
            " stored)",
            ["reason"],
            registry=self.registry,
        )
        for reason in ACK_DROP_REASONS:  # shown at 0 from the start, so rates work at once
            self.acks_dropped_total.labels(reason)
        self.log_chunks_dropped_total = Counter(
            "wattfleet_api_log_chunks_dropped_total",
            "FETCH_LOGS chunks from nodes dropped unstored, by reason (control_api/log_intake.py)",
            ["reason"],
            registry=self.registry,
        )
        for reason in LOG_DROP_REASONS:
            self.log_chunks_dropped_total.labels(reason)
        self.config_reports_dropped_total = Counter(
            "wattfleet_api_config_reports_dropped_total",
            "Configs reported by nodes dropped unstored, by reason (control_api/config_intake.py)",
            ["reason"],
            registry=self.registry,
        )
        for reason in CONFIG_REPORT_DROP_REASONS:
            self.config_reports_dropped_total.labels(reason)
        self.broker_connected = Gauge(
            "wattfleet_api_broker_connected",
            "1 while the API's MQTT connection is up",
            registry=self.registry,
        )
        self.grafana_syncs_total = Counter(
            "wattfleet_api_grafana_sync_total",
            "Grafana tenant sync runs by outcome (ok, failed).",
            ["outcome"],
            registry=self.registry,
        )
