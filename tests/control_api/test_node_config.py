"""Node config: validated with the agent's own model, versioned, pushed as CONFIG_PUSH;
agent updates as SELF_UPDATE."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from contract.commands import verify
from contract.node_config import NodeConfig
from edge.config import EdgeSettings

pytestmark = pytest.mark.integration

CONFIG = {"modbus_host": "192.168.1.50", "modbus_port": 502, "poll_interval_s": 5.0}
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
    assert pushed[1]["params"]["config"] == {"node_id": node.id, **CONFIG, "poll_interval_s": 10.0}
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
