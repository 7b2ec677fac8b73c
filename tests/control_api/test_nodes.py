"""Enrollment, credentials and broker access, against real Mosquitto (dynamic
security) and the database."""

from __future__ import annotations

import pytest
from paho.mqtt.packettypes import PacketTypes

from contract import topics
from tests.support.control_api import audit_rows, last_audit_id
from tests.support.fleet import mqtt_client, unique
from tests.support.services import wait_for

pytestmark = pytest.mark.integration


def enroll(api, actors, tenant_id=None, node_id=None):
    node_id = node_id or unique("node")
    response = api.post(
        "/nodes",
        json={"id": node_id, "tenant_id": tenant_id or actors.tenant_a, "display_name": "Roof"},
        headers=actors.admin.headers,
    )
    assert response.status_code == 201, response.text
    return response.json()


def test_enrolled_node_connects_and_is_confined_to_its_own_topics(api, actors, broker, database):
    before = last_audit_id(database)
    mine, other = enroll(api, actors), enroll(api, actors)
    assert mine["mqtt_username"] == mine["node_id"]
    assert len(mine["node_secret"]) == 64
    client = mqtt_client(broker, mine["mqtt_username"], mine["mqtt_password"])
    try:
        granted = []
        client.on_subscribe = lambda _c, _u, _mid, codes, _p: granted.extend(codes)
        client.subscribe(topics.commands(other["node_id"]), qos=1)
        client.subscribe(topics.commands(mine["node_id"]), qos=1)
        wait_for(lambda: len(granted) == 2, 5, "SUBACKs")
        assert [code.is_failure for code in granted] == [True, False]
    finally:
        client.disconnect()
        client.loop_stop()
    detail = api.get(f"/nodes/{mine['node_id']}", headers=actors.admin.headers).json()
    assert detail == {
        **detail,
        "enabled": True,
        "tenant_id": actors.tenant_a,
        "display_name": "Roof",
    }
    rows = audit_rows(database, before, action="enroll_node")
    assert [r["node_id"] for r in rows] == [mine["node_id"], other["node_id"]]
    assert all(r["outcome"] == "ok" and "mqtt_password" not in str(r["params"]) for r in rows)


def test_enrolling_an_existing_node_is_refused_and_keeps_its_credentials(api, actors, broker):
    first = enroll(api, actors)
    again = api.post(
        "/nodes",
        json={"id": first["node_id"], "tenant_id": actors.tenant_a},
        headers=actors.admin.headers,
    )
    assert again.status_code == 409
    client = mqtt_client(broker, first["node_id"], first["mqtt_password"])
    client.disconnect()
    client.loop_stop()


def test_disable_disconnects_at_once_and_refuses_reconnects(api, actors, broker):
    node = enroll(api, actors)
    client = mqtt_client(broker, node["node_id"], node["mqtt_password"])
    dropped = []
    client.on_disconnect = lambda *args: dropped.append(args)
    try:
        response = api.post(f"/nodes/{node['node_id']}/disable", headers=actors.admin.headers)
        assert response.status_code == 200
        assert response.json()["enabled"] is False
        wait_for(lambda: dropped, 5, "the broker to drop the disabled node")
    finally:
        client.loop_stop()
    with pytest.raises(ConnectionRefusedError):
        mqtt_client(broker, node["node_id"], node["mqtt_password"])
    assert (
        api.post(f"/nodes/{node['node_id']}/enable", headers=actors.admin.headers).status_code
        == 200
    )
    mqtt_client(broker, node["node_id"], node["mqtt_password"]).disconnect()


def test_rotated_credentials_replace_the_old_ones(api, actors, broker, database):
    node = enroll(api, actors)
    rotated = api.post(f"/nodes/{node['node_id']}/credentials", headers=actors.admin.headers)
    assert rotated.status_code == 200
    new = rotated.json()
    assert new["mqtt_password"] != node["mqtt_password"]
    assert new["node_secret"] != node["node_secret"]
    with pytest.raises(ConnectionRefusedError):
        mqtt_client(broker, node["node_id"], node["mqtt_password"])
    mqtt_client(broker, node["node_id"], new["mqtt_password"]).disconnect()
    with database.connect() as conn:
        stored = conn.execute(
            "SELECT command_secret FROM nodes WHERE id = %s", (node["node_id"],)
        ).fetchone()[0]
    assert stored == new["node_secret"]


def test_enrollment_without_the_broker_leaves_no_node_behind(api, actors, broker, database):
    broker.stop()
    wait_for(lambda: not api.app.state.link.connected.is_set(), 10, "API to notice")
    node_id = unique("node")
    response = api.post(
        "/nodes", json={"id": node_id, "tenant_id": actors.tenant_a}, headers=actors.admin.headers
    )
    assert response.status_code == 503
    with database.connect() as conn:
        assert (
            conn.execute("SELECT count(*) FROM nodes WHERE id = %s", (node_id,)).fetchone()[0] == 0
        )


def test_moving_a_node_to_another_tenant_moves_who_sees_it(api, actors):
    node = enroll(api, actors)
    path = f"/nodes/{node['node_id']}"
    assert api.get(path, headers=actors.operator_a.headers).status_code == 200
    moved = api.patch(path, json={"tenant_id": actors.tenant_b}, headers=actors.admin.headers)
    assert moved.status_code == 200
    assert moved.json()["tenant_id"] == actors.tenant_b
    assert api.get(path, headers=actors.operator_a.headers).status_code == 404
    assert api.get(path, headers=actors.operator_b.headers).status_code == 200
    listed_b = api.get("/nodes", headers=actors.operator_b.headers).json()
    assert [n["id"] for n in listed_b] == [node["node_id"]]
    assert api.get("/nodes", headers=actors.operator_a.headers).json() == []


def test_a_moved_nodes_command_history_stays_with_the_tenant_it_was_issued_under(api, actors):
    """The list used to select by node only: the new tenant read the old one's commands
    (a CONFIG_PUSH's params carry that tenant's tariffs), which GET /commands/{id} hid."""
    node = enroll(api, actors)
    path = f"/nodes/{node['node_id']}/commands"
    logs = {"type": "FETCH_LOGS", "params": {"lines": 20}}
    queued = {"queue": "true"}
    before = api.post(path, params=queued, json=logs, headers=actors.operator_a.headers)
    assert before.status_code == 202, before.text
    moved = api.patch(
        f"/nodes/{node['node_id']}",
        json={"tenant_id": actors.tenant_b},
        headers=actors.admin.headers,
    )
    assert moved.status_code == 200, moved.text
    assert api.get(path, headers=actors.operator_b.headers).json() == []
    after = api.post(path, params=queued, json=logs, headers=actors.operator_b.headers)
    assert after.status_code == 202, after.text
    assert [c["id"] for c in api.get(path, headers=actors.operator_b.headers).json()] == [
        after.json()["id"]
    ]
    assert {c["id"] for c in api.get(path, headers=actors.admin.headers).json()} == {
        before.json()["id"],
        after.json()["id"],
    }


def test_a_missing_tenant_is_refused_for_enrolling_moving_and_users(api, actors):
    missing = 2_000_000_000
    headers = actors.admin.headers
    node_id = unique("node")
    refused = api.post("/nodes", json={"id": node_id, "tenant_id": missing}, headers=headers)
    assert (refused.status_code, refused.json()) == (422, {"detail": "no such tenant"})
    assert api.get(f"/nodes/{node_id}", headers=headers).status_code == 404

    node = enroll(api, actors)
    path = f"/nodes/{node['node_id']}"
    moved = api.patch(path, json={"tenant_id": missing}, headers=headers)
    assert (moved.status_code, moved.json()) == (422, {"detail": "no such tenant"})
    assert api.get(path, headers=headers).json()["tenant_id"] == actors.tenant_a

    user = {"email": f"{unique('u')}@example.com", "password": "long enough pw"}
    body = {**user, "role": "operator", "tenant_id": missing}
    created = api.post("/users", json=body, headers=headers)
    assert (created.status_code, created.json()) == (422, {"detail": "no such tenant"})


def test_node_list_shows_status_from_the_collector(api, actors, database):
    node = enroll(api, actors)
    with database.connect() as conn:
        conn.execute(
            "INSERT INTO node_status (node_id, state, last_seen_at, agent_version, clock_drift_s)"
            " VALUES (%s, 'online', now(), '1.2.3', 0.4)",
            (node["node_id"],),
        )
    listed = api.get("/nodes", headers=actors.viewer_a.headers).json()
    assert [(n["id"], n["state"], n["agent_version"], n["clock_drift_s"]) for n in listed] == [
        (node["node_id"], "online", "1.2.3", 0.4)
    ]


def test_a_node_cannot_publish_on_another_nodes_topic(api, actors, broker):
    """Mosquitto answers such a QoS 1 publish with PUBACK "not authorized" (135)."""
    node, other = enroll(api, actors), enroll(api, actors)
    client = mqtt_client(broker, node["node_id"], node["mqtt_password"])
    reasons = []
    client.on_publish = lambda _c, _u, _mid, reason, _p: reasons.append(reason)
    try:
        client.publish(topics.telemetry(other["node_id"]), "{}", qos=1)
        wait_for(lambda: reasons, 5, "PUBACK")
    finally:
        client.disconnect()
        client.loop_stop()
    assert reasons[0].value == 135
    assert reasons[0].packetType == PacketTypes.PUBACK
