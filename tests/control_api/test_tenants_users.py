"""Tenants with their Grafana database role, users, and the probes."""

from __future__ import annotations

import pytest

from tests.support.fleet import unique
from tests.support.services import wait_for
from tests.support.tenants import as_role

pytestmark = pytest.mark.integration


def test_a_new_tenant_gets_a_database_role_that_sees_only_its_own_data(api, actors, database):
    created = api.post(
        "/tenants", json={"slug": unique("t"), "name": "Solar Co"}, headers=actors.admin.headers
    )
    assert created.status_code == 201
    tenant = created.json()
    assert tenant["database_role"] == f"wattfleet_tenant_{tenant['id']}"
    node_id = api.post(
        "/nodes",
        json={"id": unique("node"), "tenant_id": tenant["id"]},
        headers=actors.admin.headers,
    ).json()["node_id"]
    api.post(
        "/nodes",
        json={"id": unique("node"), "tenant_id": actors.tenant_b},
        headers=actors.admin.headers,
    )
    # The role exists without a password until one is set (the Grafana sync sets it).
    first = api.post(f"/tenants/{tenant['id']}/database-role", headers=actors.admin.headers).json()
    assert first["role"] == tenant["database_role"]
    with as_role(database, first["role"], first["password"]) as conn:
        visible = [row[0] for row in conn.execute("SELECT id FROM tenant_view.nodes")]
    assert visible == [node_id]
    # Idempotent: asking again keeps the role and mapping, with a new password.
    again = api.post(f"/tenants/{tenant['id']}/database-role", headers=actors.admin.headers).json()
    assert again["role"] == tenant["database_role"]
    assert again["password"] != first["password"]
    with database.connect() as conn:
        mapped = conn.execute(
            "SELECT count(*) FROM tenant_roles WHERE tenant_id = %s", (tenant["id"],)
        ).fetchone()[0]
    assert mapped == 1


def test_tenant_slugs_are_unique_and_only_empty_tenants_can_be_deleted(api, actors):
    slug = unique("t")
    assert (
        api.post(
            "/tenants", json={"slug": slug, "name": "A"}, headers=actors.admin.headers
        ).status_code
        == 201
    )
    assert (
        api.post(
            "/tenants", json={"slug": slug, "name": "B"}, headers=actors.admin.headers
        ).status_code
        == 409
    )
    assert (
        api.post(
            "/tenants", json={"slug": "Not A Slug", "name": "C"}, headers=actors.admin.headers
        ).status_code
        == 422
    )
    busy = api.delete(f"/tenants/{actors.tenant_a}", headers=actors.admin.headers)
    assert busy.status_code == 409
    assert api.get(f"/tenants/{actors.tenant_a}", headers=actors.admin.headers).status_code == 200


def test_users_need_a_tenant_unless_admin_and_emails_are_unique(api, actors):
    headers = actors.admin.headers
    body = {"email": f"{unique('u')}@example.com", "password": "long enough pw", "role": "operator"}
    assert api.post("/users", json=body, headers=headers).status_code == 422
    created = api.post("/users", json={**body, "tenant_id": actors.tenant_a}, headers=headers)
    assert created.status_code == 201
    assert created.json() == {**created.json(), "role": "operator", "tenant_id": actors.tenant_a}
    assert "password" not in created.text
    upper = {**body, "email": body["email"].upper(), "tenant_id": actors.tenant_a}
    assert api.post("/users", json=upper, headers=headers).status_code == 409
    admin_with_tenant = {
        **body,
        "email": f"{unique('a')}@example.com",
        "role": "admin",
        "tenant_id": actors.tenant_a,
    }
    assert api.post("/users", json=admin_with_tenant, headers=headers).status_code == 422
    short = {**body, "password": "short", "tenant_id": actors.tenant_a}
    assert api.post("/users", json=short, headers=headers).status_code == 422
    promoted = api.patch(f"/users/{created.json()['id']}", json={"role": "admin"}, headers=headers)
    assert promoted.json() == {**promoted.json(), "role": "admin", "tenant_id": None}
    # Explicit nulls leave role and disabled as they are (schemathesis found a 500 here).
    nulls = {"role": None, "disabled": None, "password": None}
    same = api.patch(f"/users/{created.json()['id']}", json=nulls, headers=headers)
    assert same.status_code == 200
    assert same.json() == {**same.json(), "role": "admin", "disabled": False}


def test_admins_cannot_lock_themselves_out(api, actors):
    me = f"/users/{actors.admin.id}"
    assert api.patch(me, json={"disabled": True}, headers=actors.admin.headers).status_code == 409
    assert (
        api.patch(
            me, json={"role": "viewer", "tenant_id": actors.tenant_a}, headers=actors.admin.headers
        ).status_code
        == 409
    )
    assert api.delete(me, headers=actors.admin.headers).status_code == 409


def test_health_and_readiness(api, broker):
    assert api.get("/health").json() == {"status": "ok"}
    assert api.get("/readiness").json() == {"database": True, "broker": True, "acks": True}
    broker.stop()
    wait_for(lambda: api.get("/readiness").status_code == 503, 10, "readiness to drop")
    assert api.get("/readiness").json() == {"database": True, "broker": False, "acks": True}
    assert api.get("/health").status_code == 200
