from __future__ import annotations

import base64
import json
import subprocess
import sys

import yaml

from collector.config import CollectorSettings
from control_api.broker_security import (
    hash_password,
    initial_config,
    node_role,
    reserved_node_id,
)
from control_api.config import ApiSettings
from tests.support.services import REPO, service_env


def test_password_hash_matches_mosquitto_ctrl_format():
    # Produced by `mosquitto_ctrl dynsec init` for the password "adminpw".
    salt = base64.b64decode("hXYFNr5PdOk+t56D")
    stored = hash_password("adminpw", salt)
    assert stored["password"] == (
        "4L6CN5pGd18pJtfeV+je/6LguPNFyEYmA4nP3Qy4zKmMdLDDmA33zx4BMKq1Tid0R3qODYnqi0kRAKsKAAPEQw=="
    )
    assert stored["iterations"] == 101


def test_node_role_names_only_its_own_topics():
    topics = {(a["acltype"], a["topic"]) for a in node_role("n1")["acls"]}
    assert topics == {
        ("publishClientSend", "nodes/n1/status"),
        ("publishClientSend", "nodes/n1/telemetry"),
        ("publishClientSend", "nodes/n1/acks"),
        ("publishClientSend", "nodes/n1/logs"),
        ("publishClientSend", "nodes/n1/config"),
        ("publishClientSend", "nodes/n1/inventory"),
        ("subscribeLiteral", "nodes/n1/commands"),
        ("publishClientReceive", "nodes/n1/commands"),
        ("subscribeLiteral", "nodes/n1/ingested"),
        ("publishClientReceive", "nodes/n1/ingested"),
        ("subscribeLiteral", "hub/broadcast"),
        ("publishClientReceive", "hub/broadcast"),
    }


def test_initial_config_denies_by_default():
    config = initial_config(("admin", "a"), ("collector", "c"), ("control-api", "p"))
    assert not any(
        config["defaultACLAccess"][k]
        for k in ("publishClientSend", "publishClientReceive", "subscribe")
    )
    assert {c["username"] for c in config["clients"]} == {"admin", "collector", "control-api"}


def test_cli_writes_once_and_never_clobbers(tmp_path):
    out = tmp_path / "dynamic-security.json"
    cmd = [sys.executable, "-m", "control_api.broker_security", "--out", str(out)]
    missing = subprocess.run(
        cmd, cwd=REPO, env=service_env(), capture_output=True, text=True, check=False
    )
    assert missing.returncode == 2
    assert "WATTFLEET_BROKER_ADMIN_PASSWORD" in missing.stderr
    env = service_env(
        WATTFLEET_BROKER_ADMIN_PASSWORD="a",
        WATTFLEET_COLLECTOR_MQTT_PASSWORD="c",
        WATTFLEET_API_MQTT_PASSWORD="p",
    )
    subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True)
    written = json.loads(out.read_text())
    out.write_text('{"kept": true}')
    again = subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True, text=True)
    assert "keeping it" in again.stdout
    assert json.loads(out.read_text()) == {"kept": True}
    assert written["clients"][1]["username"] == "collector"


def test_every_name_the_hub_uses_on_the_broker_is_reserved(monkeypatch):
    monkeypatch.delenv("WATTFLEET_MQTT_CLIENT_ID", raising=False)
    config = initial_config(("admin", "a"), ("collector", "c"), ("control-api", "p"))
    names = [c["username"] for c in config["clients"]] + [r["rolename"] for r in config["roles"]]
    compose = yaml.safe_load((REPO / "compose.yml").read_text())
    for service in compose["services"].values():
        env = service.get("environment", {})
        names += [
            env[k] for k in ("WATTFLEET_MQTT_USERNAME", "WATTFLEET_MQTT_CLIENT_ID") if k in env
        ]
    names += [CollectorSettings().mqtt_client_id, ApiSettings().mqtt_client_id]
    assert {"admin", "collector", "control-api", "collector-1", "dynsec-admin"} <= set(names)
    assert [n for n in names if not reserved_node_id(n)] == []
    assert reserved_node_id("Collector-7")
    assert reserved_node_id("ADMIN")
    assert not reserved_node_id("site-0001")
    assert not reserved_node_id("administrator")
