"""Commands through the API to a node on a real broker: the node here is an MQTT client
with the node's enrolled credentials that answers as the test tells it (the real agent
answers in tests/control_api/test_end_to_end.py)."""

from __future__ import annotations

import pytest

from contract.commands import verify
from tests.support.api_client import api_client
from tests.support.control_api import audit_rows, create_user, last_audit_id, log_in
from tests.support.fake_node import CHARGE, FakeNode, command_state, online_node, set_state
from tests.support.fleet import create_tenant, unique
from tests.support.services import wait_for

pytestmark = pytest.mark.integration


def test_command_is_stored_audited_signed_published_and_follows_the_acks(
    api, actors, node, database
):
    before = last_audit_id(database)
    response = api.post(
        f"/nodes/{node.id}/commands", json=CHARGE, headers=actors.operator_a.headers
    )
    assert response.status_code == 202, response.text
    command_id = response.json()["id"]
    assert response.json()["state"] == "sent"

    [envelope] = node.received()
    assert envelope["id"] == command_id
    assert envelope["type"] == "FORCE_CHARGE"
    assert envelope["params"] == {"power_w": 2500.0, "duration_s": 600}
    assert verify(node.id, envelope, node.secret)

    node.ack(command_id, "received")
    command_state(api, actors, command_id, "received")
    node.ack(command_id, "succeeded", "storage control set to charge at 2500 W")
    done = command_state(api, actors, command_id, "succeeded")
    assert done["detail"] == "storage control set to charge at 2500 W"
    assert [(e["state"], e["source"], e["applied"]) for e in done["events"]] == [
        ("pending", "api", True),
        ("sent", "api", True),
        ("received", "node", True),
        ("succeeded", "node", True),
    ]
    [row] = audit_rows(database, before, action="issue_command")
    assert row["actor_email"] == actors.operator_a.email
    assert row["tenant_id"] == actors.tenant_a
    assert row["node_id"] == node.id
    assert row["params"]["command_id"] == command_id
    assert row["outcome"] == "ok"

    history = api.get(f"/nodes/{node.id}/commands", headers=actors.viewer_a.headers).json()
    assert [(c["id"], c["state"]) for c in history] == [(command_id, "succeeded")]


def test_idempotency_key_does_not_send_twice(api, actors, node):
    headers = {**actors.operator_a.headers, "Idempotency-Key": "charge-42"}
    first = api.post(f"/nodes/{node.id}/commands", json=CHARGE, headers=headers)
    again = api.post(f"/nodes/{node.id}/commands", json=CHARGE, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    node.received()
    other = {**CHARGE, "params": {"power_w": 100, "duration_s": 60}}
    reused = api.post(f"/nodes/{node.id}/commands", json=other, headers=headers)
    assert reused.status_code == 409
    history = api.get(f"/nodes/{node.id}/commands", headers=actors.operator_a.headers).json()
    assert len(history) == 1
    # One command reached the node (a slow run may see it re-published while it is
    # pending, under the same id: the agent drops repeats by id).
    assert {c["id"] for c in node.commands} == {first.json()["id"]}


def test_offline_node_is_refused_unless_queued(api, actors, node, database):
    set_state(database, node.id, "offline")
    refused = api.post(f"/nodes/{node.id}/commands", json=CHARGE, headers=actors.operator_a.headers)
    assert refused.status_code == 409
    assert "offline" in refused.json()["detail"]
    assert "queue=true" in refused.json()["detail"]
    assert node.commands == []
    queued = api.post(
        f"/nodes/{node.id}/commands?queue=true", json=CHARGE, headers=actors.operator_a.headers
    )
    assert queued.status_code == 202
    assert node.received()[0]["id"] == queued.json()["id"]


def test_rejected_and_failed_answers_are_final(api, actors, node):
    ids = [
        api.post(
            f"/nodes/{node.id}/commands", json=CHARGE, headers=actors.operator_a.headers
        ).json()["id"]
        for _ in range(2)
    ]
    node.received(2)
    node.ack(ids[0], "rejected", "signature does not match")
    node.ack(ids[1], "failed", "inverter did not accept StorCtl_Mod")
    assert command_state(api, actors, ids[0], "rejected")["detail"] == "signature does not match"
    command_state(api, actors, ids[1], "failed")
    # A later, out-of-order answer does not reopen a final state.
    node.ack(ids[1], "succeeded")
    wait_for(
        lambda: (
            len(api.get(f"/commands/{ids[1]}", headers=actors.admin.headers).json()["events"]) == 4
        ),
        10,
        "the late ack recorded",
    )
    after = api.get(f"/commands/{ids[1]}", headers=actors.admin.headers).json()
    assert after["state"] == "failed"
    assert after["events"][-1] == {**after["events"][-1], "state": "succeeded", "applied": False}


def test_unanswered_command_expires_and_a_late_ack_does_not_revive_it(database, broker):
    with api_client(database, broker, command_ttl_s=1) as api:
        admin = log_in(api, create_user(database, "admin", None))
        with online_node(api, admin, create_tenant(database), database, broker) as node:
            command_id = api.post(
                f"/nodes/{node.id}/commands", json=CHARGE, headers=admin.headers
            ).json()["id"]
            expired = command_state(api, admin, command_id, "expired", timeout=15)
            assert expired["events"][-1]["source"] == "clock"
            node.ack(command_id, "succeeded", "too late")
            wait_for(
                lambda: (
                    api.get(f"/commands/{command_id}", headers=admin.headers).json()["events"][-1][
                        "detail"
                    ]
                    == "too late"
                ),
                10,
                "the late ack recorded",
            )
            final = api.get(f"/commands/{command_id}", headers=admin.headers).json()
            assert final["state"] == "expired"
            assert final["events"][-1]["applied"] is False


def test_ack_from_another_node_changes_nothing(api, actors, node, broker):
    command_id = api.post(
        f"/nodes/{node.id}/commands", json=CHARGE, headers=actors.operator_a.headers
    ).json()["id"]
    node.received()
    credentials = api.post(
        "/nodes",
        json={"id": unique("node"), "tenant_id": actors.tenant_a},
        headers=actors.admin.headers,
    ).json()
    intruder = FakeNode(broker, credentials)
    try:
        # Its own acks topic is all its ACL allows; the command id is not its own.
        intruder.ack(command_id, "succeeded", "forged")
        node.ack(command_id, "received")
        command_state(api, actors, command_id, "received")
        events = api.get(f"/commands/{command_id}", headers=actors.admin.headers).json()["events"]
        assert "forged" not in [e["detail"] for e in events]
    finally:
        intruder.close()


def test_invalid_params_are_refused_with_the_field(api, actors, node):
    bad = {"type": "FORCE_CHARGE", "params": {"power_w": -5, "duration_s": 600}}
    response = api.post(f"/nodes/{node.id}/commands", json=bad, headers=actors.operator_a.headers)
    assert response.status_code == 422
    assert any("power_w" in e["loc"] for e in response.json()["detail"])
    unknown = api.post(
        f"/nodes/{node.id}/commands",
        json={"type": "RUN_SHELL", "params": {}},
        headers=actors.operator_a.headers,
    )
    assert unknown.status_code == 422
    # The refusal names the tags, never the one refused (it was echoed whole: 200 kB).
    hostile = api.post(
        f"/nodes/{node.id}/commands",
        json={"type": "<script>" + "X" * 200_000, "params": {}},
        headers=actors.operator_a.headers,
    )
    assert hostile.status_code == 422
    assert "<script>" not in hostile.text
    assert len(hostile.content) < 2_000
    [error] = hostile.json()["detail"]
    assert error["msg"].startswith("'type' must be one of 'FORCE_CHARGE'")
    assert node.commands == []


def test_metrics_count_requests_and_commands(api, actors, node):
    command_id = api.post(
        f"/nodes/{node.id}/commands", json=CHARGE, headers=actors.operator_a.headers
    ).json()["id"]
    node.received()
    node.ack(command_id, "succeeded")
    command_state(api, actors, command_id, "succeeded")
    text = api.get("/metrics").text
    assert 'wattfleet_api_commands_total{outcome="issued",type="FORCE_CHARGE"} 1.0' in text
    assert 'wattfleet_api_commands_total{outcome="succeeded",type="FORCE_CHARGE"} 1.0' in text
    requests = 'wattfleet_api_requests_total{method="POST",route="/nodes/{node_id}/commands"'
    assert requests + ',status="202"} 1.0' in text
    assert "wattfleet_api_broker_connected 1.0" in text


def test_a_refused_command_is_audited_with_what_was_attempted(api, actors, node, database):
    lock = api.put(
        f"/nodes/{node.id}/safety-lock",
        json={"reason": "electrician on site"},
        headers=actors.admin.headers,
    )
    assert lock.status_code == 202, lock.text
    locked = api.post(f"/nodes/{node.id}/commands", json=CHARGE, headers=actors.operator_a.headers)
    assert locked.status_code == 409, locked.text
    assert "safety-locked" in locked.json()["detail"]
    update = api.post(
        f"/nodes/{node.id}/update", json={"version": "99.0"}, headers=actors.operator_a.headers
    )
    assert update.status_code == 409, update.text
    set_state(database, node.id, "offline")
    offline = api.post(
        f"/nodes/{node.id}/commands",
        json={"type": "FETCH_LOGS", "params": {"lines": 20}},
        headers=actors.operator_a.headers,
    )
    assert offline.status_code == 409, offline.text

    def refused(action: str) -> list[dict[str, object]]:
        answer = api.get(
            "/audit",
            params={"action": action, "node_id": node.id, "outcome": "conflict"},
            headers=actors.admin.headers,
        )
        assert answer.status_code == 200, answer.text
        return [
            {key: row["params"].get(key) for key in ("type", "params", "queued")}
            for row in answer.json()["rows"]
        ]

    # Newest first.
    assert refused("issue_command") == [
        {"type": "FETCH_LOGS", "params": {"lines": 20}, "queued": False},
        {"type": "FORCE_CHARGE", "params": {"power_w": 2500.0, "duration_s": 600}, "queued": False},
    ]
    assert refused("update_agent") == [
        {"type": "SELF_UPDATE", "params": {"version": "99.0"}, "queued": False}
    ]
