"""The admin's tunnel routes on a real broker and database: OPEN_TUNNEL and
CLOSE_TUNNEL issued in the admin's name with the hub's bastion, audited, and the
node's reported tunnel in GET /nodes/{id}. The real agent and bastion answer in
tests/edge/test_tunnel.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from contract.commands import verify
from tests.support.api_client import api_client
from tests.support.control_api import audit_rows, create_user, last_audit_id, log_in
from tests.support.services import wait_for

pytestmark = pytest.mark.integration

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDWkWxL0vVqf1Y1PjE3bIzw1Vd6n2S5I3b1v2GJpRk8x"
BASTION = {
    "tunnel_bastion_host": "bastion.example.com",
    "tunnel_bastion_port": 2222,
    "tunnel_bastion_user": "tunnel",
    "tunnel_bastion_host_key": HOST_KEY,
}
OPEN = {"reason": "inverter stops answering at night", "remote_port": 20022}


@pytest.fixture
def api(database, broker) -> Iterator[TestClient]:
    """The API with a bastion configured (overrides the conftest's)."""
    with api_client(database, broker, **BASTION) as client:
        yield client


def test_an_admin_opens_a_tunnel_in_their_name_to_the_hubs_bastion(api, actors, node, database):
    before = last_audit_id(database)
    response = api.post(f"/nodes/{node.id}/tunnel", json=OPEN, headers=actors.admin.headers)
    assert response.status_code == 202, response.text
    command_id = response.json()["id"]

    envelope = node.received()[0]
    assert (envelope["id"], envelope["type"]) == (command_id, "OPEN_TUNNEL")
    assert envelope["params"] == {
        "bastion_host": "bastion.example.com",
        "bastion_port": 2222,
        "bastion_user": "tunnel",
        "bastion_host_key": HOST_KEY,
        "remote_port": 20022,
        "duration_s": 1800,
        "requested_by": actors.admin.email,
        "reason": "inverter stops answering at night",
    }
    assert verify(node.id, envelope, node.secret)
    [row] = audit_rows(database, before, action="open_tunnel")
    assert (row["actor_email"], row["node_id"], row["outcome"]) == (
        actors.admin.email,
        node.id,
        "ok",
    )
    assert row["params"]["params"]["reason"] == "inverter stops answering at night"
    assert row["params"]["params"]["duration_s"] == 1800

    closed = api.delete(f"/nodes/{node.id}/tunnel", headers=actors.admin.headers)
    assert closed.status_code == 202, closed.text
    envelope = wait_for(
        lambda: next((c for c in node.commands if c["type"] == "CLOSE_TUNNEL"), None),
        10,
        "CLOSE_TUNNEL at the node",
    )
    assert envelope["params"] == {"requested_by": actors.admin.email}
    [row] = audit_rows(database, before, action="close_tunnel")
    assert row["actor_email"] == actors.admin.email


def test_only_admins_and_only_through_the_tunnel_route(api, actors, node):
    for who in (actors.operator_a, actors.viewer_a, actors.operator_b):
        refused = api.post(f"/nodes/{node.id}/tunnel", json=OPEN, headers=who.headers)
        assert refused.status_code == 403, refused.text
        assert api.delete(f"/nodes/{node.id}/tunnel", headers=who.headers).status_code == 403
    generic = {
        "type": "OPEN_TUNNEL",
        "params": {**OPEN, **{k.removeprefix("tunnel_"): v for k, v in BASTION.items()}},
    }
    for who in (actors.admin, actors.operator_a):
        refused = api.post(f"/nodes/{node.id}/commands", json=generic, headers=who.headers)
        assert refused.status_code == 422, refused.text
    assert node.commands == []


@pytest.mark.parametrize(
    "body",
    [
        {"remote_port": 20022},  # no reason
        {**OPEN, "reason": ""},
        {**OPEN, "duration_s": 5 * 3600},
        {**OPEN, "remote_port": 22},
        {**OPEN, "bastion_host": "elsewhere.example.com"},
    ],
)
def test_bad_bodies_are_refused(api, actors, node, body):
    response = api.post(f"/nodes/{node.id}/tunnel", json=body, headers=actors.admin.headers)
    assert response.status_code == 422, response.text


def test_without_a_bastion_tunnels_are_off(database, broker, node):
    with api_client(database, broker) as plain:
        admin = log_in(plain, create_user(database, "admin", None))
        refused = plain.post(f"/nodes/{node.id}/tunnel", json=OPEN, headers=admin.headers)
    assert refused.status_code == 409
    assert "no bastion is configured" in refused.json()["detail"]


def test_the_node_shows_its_reported_tunnel(api, actors, node, database):
    with database.connect() as conn:
        conn.execute(
            "UPDATE node_status SET tunnel_state = 'open', tunnel_remote_port = 20022,"
            " tunnel_until = now() + interval '30 minutes', tunnel_detail = 'for a@b: x',"
            " tunnel_public_key = %s WHERE node_id = %s",
            (HOST_KEY, node.id),
        )
        conn.commit()
    shown = api.get(f"/nodes/{node.id}", headers=actors.viewer_a.headers).json()
    assert shown["tunnel_state"] == "open"
    assert shown["tunnel_remote_port"] == 20022
    assert shown["tunnel_detail"] == "for a@b: x"
    assert shown["tunnel_public_key"] == HOST_KEY


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("tunnel_enabled", True, "tunnel_enabled: the site's own"),
        ("tunnel_local_port", 22, "tunnel_local_port: the site's own"),
        # Settings once matched keys without regard to case, so `SAFETY_LOCK: false` went
        # past this check (by exact name) and, first in the pushed file, won over the
        # site's own `safety_lock: true` on the Pi.
        ("SAFETY_LOCK", False, "SAFETY_LOCK: the site's own"),
        ("Tunnel_Enabled", True, "Tunnel_Enabled: the site's own"),
        ("TIMEZONE", "Europe/Warsaw", "TIMEZONE: the hub's"),
    ],
)
def test_a_config_push_cannot_set_the_sites_own_nor_the_hubs_keys(
    api, actors, node, key, value, why
):
    for method in ("PUT", "PATCH"):
        refused = api.request(
            method,
            f"/nodes/{node.id}/config",
            json={"config": {key: value}},
            headers=actors.admin.headers,
        )
        assert refused.status_code == 422, refused.text
        assert why in refused.json()["detail"]
    assert node.commands == []


def test_a_config_push_cannot_name_a_setting_in_another_case(api, actors, node):
    refused = api.put(
        f"/nodes/{node.id}/config",
        json={"config": {"Strategy": "peak_shaving"}},
        headers=actors.admin.headers,
    )
    assert refused.status_code == 422, refused.text
    assert "keys are lower case: Strategy (the setting is strategy)" in refused.json()["detail"]
    assert node.commands == []
