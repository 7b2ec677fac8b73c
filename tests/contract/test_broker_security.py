from __future__ import annotations

import base64
import json
import subprocess
import sys

from control_api.broker_security import hash_password, initial_config, node_role
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
        ("subscribeLiteral", "nodes/n1/commands"),
        ("publishClientReceive", "nodes/n1/commands"),
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
