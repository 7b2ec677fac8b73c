"""Node config: validated with the agent's own model, versioned, pushed as CONFIG_PUSH;
agent updates as SELF_UPDATE."""

from __future__ import annotations

import pytest

from contract.commands import verify

pytestmark = pytest.mark.integration

CONFIG = {"modbus_host": "192.168.1.50", "modbus_port": 502, "poll_interval_s": 5.0}


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
