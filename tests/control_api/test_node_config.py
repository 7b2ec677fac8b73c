"""Node config: validated with the agent's own model, versioned, pushed as CONFIG_PUSH;
agent updates as SELF_UPDATE."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from contract.commands import verify
from contract.node_config import MAX_REPORTED_CONFIG_BYTES, NodeConfig, effective_config
from control_api.metrics import CONFIG_REPORT_DROP_REASONS
from edge.config import EdgeSettings
from tests.support.control_api import dropped_by_reason
from tests.support.fake_node import online_node
from tests.support.services import wait_for

pytestmark = pytest.mark.integration

CONFIG = {"modbus_host": "192.168.1.50", "modbus_port": 502, "poll_interval_s": 5.0}
# What every push carries of the hub's own (a test tenant's: UTC, no tariff yet).
SITE_SETTINGS = {"timezone": "UTC", "tariffs": []}
# What an operator's account must not push to a Pi, and the key each is refused at.
HOSTILE_CONFIGS = [
    ({"modbus_port": 10**30}, "invalid config: modbus_port"),
    ({"mqtt_port": 0}, "invalid config: mqtt_port"),
    ({"peak_hours": [25, 99]}, "invalid config: peak_hours"),
    ({"peak_hours": [21, 17]}, "peak_hours: the start (21) must come before the end (17)"),
    ({"status_port": 22}, "invalid config: status_port"),
    ({"buffer_path": "/etc/passwd"}, "must name a .sqlite3 file"),
    ({"buffer_path": "/etc/wattfleet.sqlite3"}, "must not be under /etc"),
    ({"buffer_path": "/var/lib/wattfleet/../../../usr/x.sqlite3"}, "normalized path"),
    ({"buffer_path": "buffer.sqlite3"}, "absolute"),
    ({"update_index_url": "http://pypi.example.com/simple"}, "must be an https:// URL"),
    ({"update_find_links": "http://wheels.example.com/"}, "must be an https:// URL"),
    ({"update_find_links": "/srv/../etc"}, "normalized path"),
    ({"modbus_serial_port": "/etc/shadow"}, "invalid config: modbus_serial_port"),
    ({"price_per_kwh": 1e308}, "invalid config: price_per_kwh"),
    ({"poll_interval_s": "Infinity"}, "invalid config: poll_interval_s"),
    ({"modbus_host": "x" * 300}, "invalid config: modbus_host"),
]


def test_each_put_is_a_new_version_pushed_to_the_node(api, actors, node):
    headers = actors.operator_a.headers
    assert api.get(f"/nodes/{node.id}/config", headers=headers).status_code == 404
    first = api.put(f"/nodes/{node.id}/config", json={"config": CONFIG}, headers=headers)
    second = api.put(
        f"/nodes/{node.id}/config",
        json={"config": {**CONFIG, "poll_interval_s": 10.0}},
        headers=headers,
    )
    assert first.status_code == second.status_code == 202
    pushed = node.received(2)
    assert [c["type"] for c in pushed] == ["CONFIG_PUSH", "CONFIG_PUSH"]
    assert [c["params"]["version"] for c in pushed] == [1, 2]
    assert pushed[1]["params"]["config"] == {
        "node_id": node.id,
        **CONFIG,
        "poll_interval_s": 10.0,
        **SITE_SETTINGS,
    }
    assert all(verify(node.id, c, node.secret) for c in pushed)
    current = api.get(f"/nodes/{node.id}/config", headers=actors.viewer_a.headers).json()
    assert current["version"] == 2
    assert current["command_id"] == second.json()["id"]
    assert current["config"]["poll_interval_s"] == 10.0


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"poll_interval_s": -1}, "invalid config: poll_interval_s"),
        ({"modbus_transport": "carrier-pigeon"}, "invalid config: modbus_transport"),
        ({"no_such_setting": 1}, "invalid config: no_such_setting"),
        ({"node_id": "someone-else"}, "node_id must stay"),
        ({"node_secret": "leak"}, "secrets stay on the node"),
        ({"mqtt_password": "leak"}, "secrets stay on the node"),
        *HOSTILE_CONFIGS,
    ],
)
def test_invalid_configs_are_refused_and_nothing_is_sent(api, actors, node, config, message):
    response = api.put(
        f"/nodes/{node.id}/config", json={"config": config}, headers=actors.operator_a.headers
    )
    assert response.status_code == 422
    assert message in response.json()["detail"]
    assert node.commands == []
    assert api.get(f"/nodes/{node.id}/config", headers=actors.admin.headers).status_code == 404


def test_update_sends_self_update_with_the_version(api, actors, node):
    response = api.post(
        f"/nodes/{node.id}/update", json={"version": "0.2.0"}, headers=actors.operator_a.headers
    )
    assert response.status_code == 202
    [command] = node.received()
    assert command["type"] == "SELF_UPDATE"
    assert command["params"] == {"version": "0.2.0"}
    bad = api.post(
        f"/nodes/{node.id}/update",
        json={"version": "1.0; rm -rf /"},
        headers=actors.operator_a.headers,
    )
    assert bad.status_code == 422


@pytest.mark.parametrize(("config", "message"), HOSTILE_CONFIGS)
def test_the_agent_refuses_the_same_configs_on_receipt(tmp_path, config, message):
    """The agent's settings are the same model: a push that got past a hub (an older
    one, or a forged command) is refused on the Pi too."""
    fine: dict[str, Any] = {"node_id": "site-1", "buffer_path": str(tmp_path / "buffer.sqlite3")}
    EdgeSettings(**fine)
    with pytest.raises(ValidationError) as refused:
        EdgeSettings(**{**fine, **config})
    assert message.removeprefix("invalid config: ") in str(refused.value)


def test_the_allowed_edges_are_accepted():
    NodeConfig(
        node_id="site-1",
        modbus_port=65535,
        status_port=1024,
        peak_hours=(0, 24),
        buffer_path="/srv/wattfleet/buffer.sqlite3",
        update_index_url="https://pypi.example.com/simple",
        update_find_links="/opt/wheels",
        modbus_serial_port="/dev/serial0",
    )


def report(node_id: str, version: int | None = None, **config: Any) -> str:
    """A report as the agent sends it: its effective config, secrets left out."""
    effective = effective_config(NodeConfig(node_id=node_id, node_secret="s", **config))
    body = {"version": version, "ts": datetime.now(UTC).isoformat(), "config": effective}
    return json.dumps(body)


def dropped_reports(api) -> dict[str, float]:
    return dropped_by_reason(api, "wattfleet_api_config_reports_dropped_total")


def reported(api, user, node_id: str, **expected: Any) -> dict[str, Any]:
    """The node's config once GET shows one with these config values."""

    def shown() -> dict[str, Any] | None:
        response = api.get(f"/nodes/{node_id}/config", headers=user.headers)
        if response.status_code != 200:
            return None
        body: dict[str, Any] = response.json()
        config = body["config"]
        matches = body["source"] == "reported" and all(
            config.get(k) == v for k, v in expected.items()
        )
        return body if matches else None

    body: dict[str, Any] = wait_for(shown, 10, f"reported config {expected} of {node_id}")
    return body


def test_the_reported_config_is_what_get_answers_from_the_first_connection(api, actors, node):
    missing = api.get(f"/nodes/{node.id}/config", headers=actors.viewer_a.headers)
    assert missing.status_code == 404
    assert "has not reported its config" in missing.json()["detail"]
    node.report_config(report(node.id, modbus_host="192.168.1.7"))
    shown = reported(api, actors.viewer_a, node.id, modbus_host="192.168.1.7")
    assert shown["version"] is None
    assert shown["command_id"] is None
    assert shown["reported_at"] is not None
    assert shown["config"]["buffer_path"] == "/var/lib/wattfleet/buffer.sqlite3"
    assert not {"node_secret", "mqtt_password"} & shown["config"].keys()
    # A push does not change what the node runs until it reports again.
    put = api.put(
        f"/nodes/{node.id}/config", json={"config": CONFIG}, headers=actors.operator_a.headers
    )
    assert put.status_code == 202
    assert reported(api, actors.viewer_a, node.id)["config"]["modbus_host"] == "192.168.1.7"
    node.report_config(report(node.id, 1, **CONFIG))
    assert reported(api, actors.viewer_a, node.id, **CONFIG)["version"] == 1


def test_bad_reports_are_dropped_counted_and_the_last_good_one_stays(api, actors, node):
    node.report_config(report(node.id, modbus_host="10.0.0.1"))
    reported(api, actors.admin, node.id, modbus_host="10.0.0.1")
    good = json.loads(report(node.id))

    def variant(**changes: Any) -> str:
        return json.dumps({**good, "config": {**good["config"], **changes}})

    node.report_config(
        b"x" * (MAX_REPORTED_CONFIG_BYTES + 1),
        b"{not json",
        b"[" * 5000 + b"]" * 5000,
        json.dumps({**good, "version": 0}),
        json.dumps({**good, "extra": 1}),
        '{"version": null, "ts": "2026-01-01T00:00:00Z", "config": {"poll_interval_s": NaN}}',
        variant(node_id="someone-else"),
        variant(node_secret="leaked"),
        variant(no_such_setting=1),
        variant(poll_interval_s=-1),
        variant(modbus_host="a\u0000b"),
        report(node.id, modbus_host="10.0.0.2"),
    )
    shown = reported(api, actors.admin, node.id, modbus_host="10.0.0.2")
    assert "leaked" not in json.dumps(shown)
    expected = dict.fromkeys(CONFIG_REPORT_DROP_REASONS, 0.0)
    assert dropped_reports(api) == {**expected, "too_large": 1, "malformed": 5, "invalid": 5}


def test_a_node_reports_only_its_own_config(api, actors, node, broker, database):
    with online_node(api, actors.admin, actors.tenant_a, database, broker) as other:
        # The broker refuses a node publishing on another node's topic.
        other.client.publish(f"nodes/{node.id}/config", report(node.id, modbus_host="6.6.6.6"))
        other.report_config(report(other.id, modbus_host="10.9.9.9"))
        reported(api, actors.admin, other.id, modbus_host="10.9.9.9")
    assert api.get(f"/nodes/{node.id}/config", headers=actors.admin.headers).status_code == 404


def test_patch_changes_only_the_keys_given_on_the_reported_config(api, actors, node):
    headers = actors.operator_a.headers
    refused = api.patch(f"/nodes/{node.id}/config", json={"config": {}}, headers=headers)
    assert refused.status_code == 409
    assert "push a whole config with PUT first" in refused.json()["detail"]
    node.report_config(
        report(node.id, modbus_host="192.168.1.7", buffer_path="/srv/w/buffer.sqlite3")
    )
    base = reported(api, actors.admin, node.id, modbus_host="192.168.1.7")["config"]
    response = api.patch(
        f"/nodes/{node.id}/config",
        json={"config": {"poll_interval_s": 2.0, "status_port": None}},
        headers=headers,
    )
    assert response.status_code == 202
    body = response.json()
    expected = {k: v for k, v in base.items() if k != "status_port"} | {"poll_interval_s": 2.0}
    assert body["config"] == expected
    assert body["version"] == 1
    [pushed] = node.received()
    assert pushed["id"] == body["id"]
    assert pushed["params"] == {"version": 1, "config": expected}
    # Everything the issue lost stays: broker, Modbus host, buffer path.
    assert pushed["params"]["config"]["buffer_path"] == "/srv/w/buffer.sqlite3"
    assert pushed["params"]["config"]["mqtt_host"] == base["mqtt_host"]


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"poll_interval_s": -1}, "invalid config: poll_interval_s"),
        ({"node_id": "someone-else"}, "node_id must stay"),
        ({"node_secret": "leak"}, "secrets stay on the node"),
        ({"peak_hours": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": 1}}}}}}}}}, "deeper"),
        *HOSTILE_CONFIGS,
    ],
)
def test_invalid_patches_are_refused_and_nothing_is_sent(api, actors, node, patch, message):
    node.report_config(report(node.id))
    reported(api, actors.admin, node.id)
    response = api.patch(
        f"/nodes/{node.id}/config", json={"config": patch}, headers=actors.operator_a.headers
    )
    assert response.status_code == 422
    assert message in response.json()["detail"]
    assert node.commands == []


def test_patch_falls_back_to_the_last_pushed_config_for_an_agent_that_does_not_report(
    api, actors, node
):
    headers = actors.operator_a.headers
    put = api.put(f"/nodes/{node.id}/config", json={"config": CONFIG}, headers=headers)
    assert put.status_code == 202
    shown = api.get(f"/nodes/{node.id}/config", headers=headers).json()
    assert shown["source"] == "pushed"
    assert shown["reported_at"] is None
    response = api.patch(
        f"/nodes/{node.id}/config", json={"config": {"modbus_port": 1502}}, headers=headers
    )
    assert response.status_code == 202
    assert response.json()["config"] == {
        "node_id": node.id,
        **CONFIG,
        "modbus_port": 1502,
        **SITE_SETTINGS,
    }
    assert response.json()["version"] == 2
