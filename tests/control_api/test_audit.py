"""The audit log: append-only, hash-chained, scoped by tenant, and checked by the API
and the CLI."""

from __future__ import annotations

import subprocess
import sys

import psycopg
import pytest

from tests.support.control_api import api_env, audit_rows, last_audit_id
from tests.support.services import REPO

pytestmark = pytest.mark.integration


def test_update_delete_and_truncate_are_refused(api, actors, database):
    api.get("/users", headers=actors.operator_a.headers)  # refused: audited
    row_id = last_audit_id(database)
    with database.connect() as conn:
        for sql in (
            "UPDATE audit_log SET outcome = 'ok' WHERE id = %s",
            "DELETE FROM audit_log WHERE id = %s",
        ):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(sql, (row_id,))
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute("TRUNCATE audit_log")


def test_tampering_with_one_row_is_reported_for_exactly_that_row(api, actors, database, broker):
    for _ in range(3):
        api.get("/users", headers=actors.operator_a.headers)
    victim = last_audit_id(database) - 1
    assert api.get("/audit/verify", headers=actors.admin.headers).json()["ok"] is True
    with database.connect() as conn, conn.transaction():
        # What a superuser could do: switch the guard off and rewrite history.
        conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
        original = conn.execute(
            "SELECT actor_email FROM audit_log WHERE id = %s", (victim,)
        ).fetchone()[0]
        conn.execute("UPDATE audit_log SET actor_email = 'someone@else' WHERE id = %s", (victim,))
        conn.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only")
    try:
        report = api.get("/audit/verify", headers=actors.admin.headers).json()
        assert report["ok"] is False
        assert report["bad_rows"] == [victim]
        env = api_env(database, broker)
        cli = subprocess.run(
            [sys.executable, "-m", "control_api", "verify-audit"],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert cli.returncode == 1
        assert f"bad rows: [{victim}]" in cli.stdout
    finally:
        with database.connect() as conn, conn.transaction():
            conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
            conn.execute("UPDATE audit_log SET actor_email = %s WHERE id = %s", (original, victim))
            conn.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only")
    assert api.get("/audit/verify", headers=actors.admin.headers).json()["bad_rows"] == []


def test_operators_read_their_tenants_rows_only(api, actors, database):
    before = last_audit_id(database)
    api.get("/users", headers=actors.operator_a.headers)
    api.get("/users", headers=actors.operator_b.headers)
    a_rows = api.get("/audit", headers=actors.operator_a.headers).json()["rows"]
    assert {row["tenant_id"] for row in a_rows} == {actors.tenant_a}
    assert actors.operator_b.email not in {row["actor_email"] for row in a_rows}
    admin_rows = api.get("/audit?limit=1000", headers=actors.admin.headers).json()["rows"]
    emails = {row["actor_email"] for row in admin_rows if row["id"] > before}
    assert {actors.operator_a.email, actors.operator_b.email} <= emails
    assert api.get("/audit", headers=actors.viewer_a.headers).status_code == 403
    assert api.get("/audit/verify", headers=actors.operator_a.headers).status_code == 403


def test_a_probe_of_another_tenants_node_is_recorded_under_the_prober(api, actors, database):
    enrolled = api.post(
        "/nodes",
        json={"id": "probe-target-" + str(actors.tenant_b), "tenant_id": actors.tenant_b},
        headers=actors.admin.headers,
    ).json()
    before = last_audit_id(database)
    response = api.get(f"/nodes/{enrolled['node_id']}", headers=actors.operator_a.headers)
    assert response.status_code == 404
    [row] = audit_rows(database, before)
    assert row["outcome"] == "denied"
    assert row["tenant_id"] == actors.tenant_a
    assert row["actor_email"] == actors.operator_a.email
    b_rows = api.get("/audit", headers=actors.operator_b.headers).json()["rows"]
    assert row["id"] not in {r["id"] for r in b_rows}


@pytest.mark.parametrize(
    ("body", "status"),
    [(b'{"type": "FETCH_LOGS"', 422), (b"[" * 20_000 + b"]" * 20_000, 400), (b"\xff", 400)],
)
def test_a_body_refused_before_authentication_is_audited_under_its_token(
    api, actors, database, node, body, status
):
    """A body that is not JSON is refused before the route's dependencies run, so before
    the caller is known: its row had no actor and no tenant, and a user could send
    hostile bodies in no one's name. The row now names whom a valid token names."""
    before = last_audit_id(database)
    headers = {**actors.operator_a.headers, "Content-Type": "application/json"}
    response = api.post(f"/nodes/{node.id}/commands", content=body, headers=headers)
    assert response.status_code == status, response.text
    [row] = audit_rows(database, before)
    assert (row["actor_email"], row["tenant_id"]) == (actors.operator_a.email, actors.tenant_a)
    # Without a valid token, no one is named.
    forged = {"Authorization": "Bearer not.a.token", "Content-Type": "application/json"}
    before = last_audit_id(database)
    assert api.post(f"/nodes/{node.id}/commands", content=body, headers=forged).status_code in (
        status,
        401,
    )
    assert [r["actor_email"] for r in audit_rows(database, before)] in ([None], [])


def test_a_tenant_user_cannot_tell_another_tenants_node_from_a_missing_one(api, actors):
    """The prober reads its own rows: a look at tenant B's node and at no node at all
    must read the same there; only admins see which was which."""
    other = api.post(
        "/nodes",
        json={"id": "hidden-" + str(actors.tenant_b), "tenant_id": actors.tenant_b},
        headers=actors.admin.headers,
    ).json()["node_id"]
    missing = "missing-" + str(actors.tenant_b)
    for node_id in (other, missing):
        response = api.get(f"/nodes/{node_id}", headers=actors.operator_a.headers)
        assert response.status_code == 404
        assert response.json() == {"detail": "node not found"}

    def seen_by(user):
        rows = api.get("/audit?action=get_node&limit=1000", headers=user.headers).json()["rows"]
        return {r["node_id"]: r for r in rows}

    as_tenant = seen_by(actors.operator_a)
    ignore = {"id", "ts", "hash", "node_id", "params"}
    assert {k: v for k, v in as_tenant[other].items() if k not in ignore} == {
        k: v for k, v in as_tenant[missing].items() if k not in ignore
    }
    assert as_tenant[other]["outcome"] == "not_found"
    as_admin = seen_by(actors.admin)
    assert (as_admin[other]["outcome"], as_admin[missing]["outcome"]) == ("denied", "not_found")


def test_create_admin_cli_is_idempotent(database, broker):
    env = api_env(database, broker)
    email = f"first-admin-{broker.port}@example.com"

    def run(password, *extra, email=email):
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "control_api",
                "create-admin",
                "--email",
                email,
                "--password-stdin",
                *extra,
            ],
            input=password + "\n",
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )

    first, second = run("first password 1"), run("second password 2", "--totp")
    assert first.returncode == 0
    assert f"admin {email} created" in first.stdout
    assert second.returncode == 0
    assert f"admin {email} updated" in second.stdout
    assert "TOTP: otpauth://totp/" in second.stdout
    # The same account however it is spelled (control_api/identity.py).
    respelled = run("third password 3", email=email.upper())
    assert respelled.returncode == 0
    assert "updated" in respelled.stdout
    short = run("short")
    assert short.returncode == 1
    assert "12 characters" in short.stderr
    not_an_address = run("fourth password 4", email="first-admin")
    assert not_an_address.returncode == 1
    assert "not an email address" in not_an_address.stderr
    with database.connect() as conn:
        rows = conn.execute(
            "SELECT role, totp_enabled FROM users WHERE email = %s", (email,)
        ).fetchall()
    assert rows == [("admin", True)]
