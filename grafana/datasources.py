"""Datasource identities shared by the dashboards, the provisioning files and the
tenant sync (plain strings: the control API imports this without the dashboard SDK).

Uids are per organization, so every org's TimescaleDB datasource has the same uid and
one dashboard JSON serves them all; the role it logs in as decides what it sees."""

from __future__ import annotations

TIMESCALE_UID = "wattfleet-timescaledb"
TIMESCALE_TYPE = "grafana-postgresql-datasource"
PROMETHEUS_UID = "wattfleet-prometheus"
ALERTMANAGER_UID = "wattfleet-alertmanager"
