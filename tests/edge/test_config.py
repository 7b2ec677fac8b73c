from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from contract.node_config import NodeConfig
from contract.settings import ConfigError
from edge.__main__ import choose_state_dir
from edge.config import EdgeSettings

EXAMPLE = Path(__file__).resolve().parents[2] / "edge" / "config.example.yaml"
HUB_PACKAGES = ("fastapi", "sqlalchemy", "psycopg", "alembic", "uvicorn", "apscheduler")


def test_example_documents_every_setting_and_is_valid(monkeypatch):
    keys = set(yaml.safe_load(EXAMPLE.read_text()))
    assert keys == set(EdgeSettings.model_fields)
    monkeypatch.setenv("WATTFLEET_EDGE_MQTT_PASSWORD", "from-env")
    monkeypatch.setenv("WATTFLEET_EDGE_NODE_SECRET", "also-from-env")
    settings = EdgeSettings.from_file(EXAMPLE)
    assert settings.mqtt_password.get_secret_value() == "from-env"
    assert (settings.mqtt_username, settings.mqtt_client_id) == ("site-0001", "site-0001")


def test_the_agent_reads_the_contracts_node_config_and_nothing_more():
    assert issubclass(EdgeSettings, NodeConfig)
    # No field of its own: every key is declared once, in the contract.
    assert inspect.get_annotations(EdgeSettings) == {}
    assert set(EdgeSettings.model_fields) == set(NodeConfig.model_fields)


def test_the_node_config_contract_imports_no_hub_package():
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, contract.node_config;"
            f" print(sorted(m for m in sys.modules if m.split('.')[0] in {HUB_PACKAGES!r}))",
        ],
        cwd=EXAMPLE.parents[1],
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == "[]"


def test_validating_a_node_config_reads_no_environment(monkeypatch):
    # The hub validates pushes in a process full of WATTFLEET_* settings of its own.
    monkeypatch.setenv("WATTFLEET_MQTT_PORT", "not a port")
    monkeypatch.setenv("WATTFLEET_EDGE_MODBUS_HOST", "10.0.0.9")
    config = NodeConfig.model_validate({"node_id": "site-1"})
    assert (config.mqtt_port, config.modbus_host) == (1883, "127.0.0.1")
    # The agent itself is overridden by its own variables.
    assert EdgeSettings(node_id="site-1").modbus_host == "10.0.0.9"


def test_prod_refuses_example_secrets():
    with pytest.raises(ConfigError, match="WATTFLEET_EDGE_MQTT_PASSWORD"):
        EdgeSettings.from_file(EXAMPLE)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("node_id: a\nmqtt_prot: 1\n", "mqtt_prot"),
        ("node_id: 'a/b'\n", "node_id"),
        ("- just\n- a list\n", "expected a mapping"),
        ("node_id: [unclosed\n", "while parsing"),
        ("node_id: a\nconfirm_timeout_s: 0.5\n", "confirm_timeout_s"),
        ("node_id: a\nreplay_max_samples_per_s: 0\n", "replay_max_samples_per_s"),
        ("node_id: a\nreplay_batch_samples: 1001\n", "replay_batch_samples"),
        ("node_id: a\ningest_confirmations: perhaps\n", "ingest_confirmations"),
        ("node_id: a\nlog_format: xml\n", "log_format"),
        ("node_id: a\ningest_url: http://hub:8443\n", "must be an https:// URL"),
        ("node_id: a\ningest_ca_file: ca.crt\n", "ingest_ca_file"),
        ("node_id: a\nhttp_fallback_after_s: 0\n", "http_fallback_after_s"),
        # Keys are matched as named: of two in different cases the first used to win.
        ("node_id: a\nSAFETY_LOCK: false\nsafety_lock: true\n", "keys are lower case: SAFETY_LOCK"),
    ],
)
def test_bad_files_say_what_is_wrong(tmp_path, text, message):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        EdgeSettings.from_file(path)


def test_systemd_unit_restarts_and_runs_unprivileged():
    unit = (EXAMPLE.parent / "systemd" / "wattfleet-edge.service").read_text()
    lines = {
        line.split("=", 1)[0]: line.split("=", 1)[1]
        for line in unit.splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert lines["User"] == "wattfleet"
    assert lines["Restart"] == "always"
    assert lines["ExecStart"].endswith(
        "-m edge --config /etc/wattfleet/config.yaml --state-dir /var/lib/wattfleet"
    )
    # A CONFIG_PUSH rewrites the config file and keeps a backup beside it.
    assert "/etc/wattfleet" in lines["ReadWritePaths"].split()
    assert lines["NoNewPrivileges"] == "true"


def test_the_state_dir_comes_from_the_command_line_systemd_or_the_config_file():
    config = Path("/etc/wattfleet/config.yaml")
    systemd = {"STATE_DIRECTORY": "/var/lib/wattfleet:/var/lib/other"}
    assert choose_state_dir(Path("/srv/state"), config, systemd) == Path("/srv/state")
    assert choose_state_dir(None, config, systemd) == Path("/var/lib/wattfleet")
    assert choose_state_dir(None, config, {}) == Path("/etc/wattfleet")
