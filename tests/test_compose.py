"""compose.yml, checked statically (no Docker engine here)."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from collector.config import CollectorSettings
from control_api.config import ApiSettings
from tests.support.services import REPO

LONG_RUNNING = {
    "timescaledb",
    "mosquitto",
    "collector",
    "control-api",
    "grafana",
    "prometheus",
    "alertmanager",
}
ONE_SHOT = {"migrate", "broker-init"}


def _compose() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load((REPO / "compose.yml").read_text())
    return compose


def test_services_and_images():
    services = _compose()["services"]
    assert set(services) == LONG_RUNNING | ONE_SHOT
    assert services["timescaledb"]["image"].startswith("timescale/timescaledb:2.")
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto:2.")
    for name, service in services.items():
        image = service["image"]
        assert re.search(r":v?[0-9][\w.-]*$", image), f"{name}: pin {image} to a version"
    build = services["migrate"]["build"]
    assert (REPO / build["context"] / build["dockerfile"]).is_file()


def test_healthchecks_and_start_order():
    services = _compose()["services"]
    for name in LONG_RUNNING:
        assert services[name]["healthcheck"]["test"], f"{name} has no healthcheck"
        assert services[name]["restart"] == "unless-stopped"
    for name in ONE_SHOT:
        assert services[name]["restart"] == "no"
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency]
            else:
                assert condition == "service_completed_successfully"
                assert dependency in ONE_SHOT
    assert services["collector"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )


def test_volumes_and_bind_mounts_exist():
    compose = _compose()
    declared = set(compose["volumes"])
    used = set()
    for service in compose["services"].values():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"bind mount {source} is missing"
            else:
                used.add(source)
    assert used == declared


def test_collector_environment_names_real_settings():
    services = _compose()["services"]
    fields = {f"WATTFLEET_{name.upper()}" for name in CollectorSettings.model_fields}
    env = services["collector"]["environment"]
    assert set(env) <= fields, set(env) - fields
    assert {"WATTFLEET_DATABASE_URL", "WATTFLEET_MQTT_PASSWORD", "WATTFLEET_MQTT_CLIENT_ID"} <= set(
        env
    )
    # Secrets are required from the operator, never defaulted in the file.
    assert "${WATTFLEET_COLLECTOR_MQTT_PASSWORD:?" in env["WATTFLEET_MQTT_PASSWORD"]


def test_control_api_environment_names_real_settings():
    env = _compose()["services"]["control-api"]["environment"]
    fields = {f"WATTFLEET_{name.upper()}" for name in ApiSettings.model_fields}
    assert set(env) <= fields, set(env) - fields
    for secret, source in (
        ("WATTFLEET_JWT_SECRET", "${WATTFLEET_JWT_SECRET:?"),
        ("WATTFLEET_MQTT_PASSWORD", "${WATTFLEET_API_MQTT_PASSWORD:?"),
    ):
        assert source in env[secret]
    assert env["WATTFLEET_MQTT_USERNAME"] == "control-api"


def test_observability_services_mount_the_repo_config():
    services = _compose()["services"]
    grafana_mounts = services["grafana"]["volumes"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana_mounts
    assert "./grafana/dashboards:/var/lib/grafana/dashboards/wattfleet:ro" in grafana_mounts
    assert services["collector"]["environment"]["WATTFLEET_ALERTMANAGER_URL"] == (
        "http://alertmanager:9093"
    )
    prometheus = (REPO / "prometheus" / "prometheus.yml").read_text()
    for target in ("collector:9101", "control-api:8000", "alertmanager:9093"):
        assert target in prometheus


def test_grafana_provisioning_names_the_datasources_the_dashboards_use():
    from grafana.datasources import ALERTMANAGER_UID, PROMETHEUS_UID, TIMESCALE_TYPE, TIMESCALE_UID

    provisioned = yaml.safe_load(
        (REPO / "grafana/provisioning/datasources/wattfleet.yml").read_text()
    )["datasources"]
    by_uid = {d["uid"]: d for d in provisioned}
    assert set(by_uid) == {TIMESCALE_UID, PROMETHEUS_UID, ALERTMANAGER_UID}
    assert by_uid[TIMESCALE_UID]["type"] == TIMESCALE_TYPE
    assert by_uid[TIMESCALE_UID]["user"] == "wattfleet_grafana_admin"
    used = set()
    for path in (REPO / "grafana" / "dashboards").glob("*/*.json"):
        for panel in json.loads(path.read_text())["panels"]:
            used.add(panel["datasource"]["uid"])
    assert used <= set(by_uid)
    provider = yaml.safe_load((REPO / "grafana/provisioning/dashboards/wattfleet.yml").read_text())[
        "providers"
    ][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/wattfleet"
