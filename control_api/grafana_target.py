"""Where the tenant sync finds Grafana, and how Grafana finds TimescaleDB."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GrafanaTarget:
    url: str  # http(s)://host:port[/prefix]
    user: str
    password: str
    # How Grafana reaches TimescaleDB (host:port) and the database name.
    db_host: str
    db_name: str
    db_sslmode: str = "disable"
