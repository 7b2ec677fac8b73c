"""Collector settings (`WATTFLEET_*` environment variables)."""

from __future__ import annotations

import socket

from limits import parse
from pydantic import Field, SecretStr, field_validator, model_validator

from contract.settings import DatabaseSettings, MqttSettings, ServiceSettings

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _stable_client_id() -> str:
    # A collector must come back under the same client id: its persistent session holds
    # its share of queued telemetry, which no other collector will receive.
    return f"collector-{socket.gethostname()}"


class CollectorSettings(ServiceSettings, MqttSettings, DatabaseSettings):
    mqtt_client_id: str = Field(default_factory=_stable_client_id)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9101

    # A batch is committed when it holds this many messages or its first message has
    # waited this long, whichever comes first.
    batch_max_messages: int = Field(default=5_000, ge=1)
    batch_max_seconds: float = Field(default=1.0, gt=0)
    # Received but uncommitted messages held in memory. When full, the collector stops
    # reading from the broker (which keeps queuing) rather than dropping anything.
    queue_max_messages: int = Field(default=20_000, ge=1)

    # Collectors share the load through `$share/collector/...`. Mosquitto 2.0 does not
    # restore shared subscriptions from its persistence file, so samples nodes send right
    # after a broker restart, before the collectors resubscribe, are lost. A single
    # collector can subscribe plainly instead (false): its persistent subscription then
    # survives a broker restart and the broker queues for it meanwhile. Never false with
    # more than one collector: each would receive (and write) everything.
    shared_subscription: bool = True

    max_payload_bytes: int = Field(default=1_048_576, ge=1_024)
    future_tolerance_s: float = 300.0
    retention_days: int = 30
    db_retry_max_s: float = 30.0

    # The liveness watchdog (collector/watchdog.py); one collector runs each round.
    watchdog_interval_s: float = Field(default=30.0, gt=0)
    offline_after_s: float = Field(default=300.0, gt=0)
    stop_paging_after_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    clock_drift_alert_s: float = Field(default=60.0, gt=0)
    # NodeBacklogStuck: a node's unconfirmed backlog has grown this long, and its oldest
    # sample waited as long. Several of the nodes' heartbeat intervals (60 s by default).
    backlog_stuck_after_s: float = Field(default=900.0, gt=0)
    # Alertmanager's base URL (http://alertmanager:9093); unset sends no alerts.
    alertmanager_url: str | None = Field(default=None, pattern=r"^https?://")

    # The HTTPS ingest endpoint (`wattfleet-collector http-ingest`, collector/http_ingest.py).
    # Without a certificate and key it speaks plain HTTP, and then only on a loopback
    # address, for a TLS-terminating proxy on the same host.
    http_ingest_host: str = "127.0.0.1"
    http_ingest_port: int = Field(default=8443, ge=1, le=65_535)
    http_ingest_tls_cert_file: str | None = None
    http_ingest_tls_key_file: str | None = None
    # Requests each node may post, as a moving window ("300/minute"); per process.
    http_ingest_rate_per_node: str = "300/minute"
    # A signed request's timestamp may be this far from the hub's clock, either way.
    http_ingest_clock_window_s: float = Field(default=300.0, gt=0, le=3600)
    http_ingest_db_connections: int = Field(default=4, ge=1, le=100)

    @field_validator("http_ingest_rate_per_node")
    @classmethod
    def _rate(cls, value: str) -> str:
        parse(value)  # a ValueError says what is wrong
        return value

    @model_validator(mode="after")
    def _tls_or_loopback(self) -> CollectorSettings:
        cert, key = self.http_ingest_tls_cert_file, self.http_ingest_tls_key_file
        if (cert is None) != (key is None):
            raise ValueError("set both http_ingest_tls_cert_file and http_ingest_tls_key_file")
        if cert is None and self.http_ingest_host not in LOOPBACK:
            raise ValueError("plain HTTP ingest (no TLS certificate) only on a loopback address")
        return self

    def secrets_to_check(self) -> dict[str, SecretStr | None]:
        return {"WATTFLEET_MQTT_PASSWORD": self.mqtt_password}
