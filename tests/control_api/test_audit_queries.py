"""What the audit keeps (changes, refusals, secret reads; routine reads only when
WATTFLEET_API_AUDIT_READS is on) and what `GET /audit` finds: each filter, their
combination, a tenant's reader's view, and the cursor through the pages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import BaseModel

from control_api.routes import audit, auth, commands, nodes, tariffs, tenants, users
from control_api.schemas import SecretOut
from tests.support.api_client import api_client
from tests.support.control_api import (
    PASSWORD,
    audit_rows,
    create_user,
    last_audit_id,
    log_in,
)
from tests.support.fleet import unique

pytestmark = pytest.mark.integration

ROUTERS = (audit, auth, commands, nodes, tariffs, tenants, users)


def test_routine_reads_leave_no_row_refusals_and_secret_reads_do(api, actors, database):
    enrolled = api.post(
        "/nodes",
        json={"id": unique("node"), "tenant_id": actors.tenant_a},
        headers=actors.admin.headers,
    ).json()["node_id"]
    before = last_audit_id(database)
    for user, path in (
        (actors.admin, "/nodes"),
        (actors.admin, f"/nodes/{enrolled}"),
        (actors.operator_a, "/tenants"),
        (actors.viewer_a, f"/nodes/{enrolled}/commands"),
        (actors.admin, "/audit"),
        (actors.admin, "/audit/verify"),
    ):
        assert api.get(path, headers=user.headers).status_code == 200, path
    assert audit_rows(database, before) == []

    denied = api.get("/users", headers=actors.operator_a.headers)
    hidden = api.get(f"/nodes/{enrolled}", headers=actors.operator_b.headers)
    rotated = api.post(f"/nodes/{enrolled}/credentials", headers=actors.admin.headers)
    totp = api.post("/auth/totp", json={"password": PASSWORD}, headers=actors.viewer_a.headers)
    assert [r.status_code for r in (denied, hidden, rotated, totp)] == [403, 404, 200, 200]
    rows = audit_rows(database, before)
    assert [(r["action"], r["outcome"], r["actor_email"]) for r in rows] == [
        ("list_users", "denied", actors.operator_a.email),
        ("get_node", "denied", actors.operator_b.email),
        ("rotate_credentials", "ok", actors.admin.email),
        ("totp_setup", "ok", actors.viewer_a.email),
    ]


def test_with_audit_reads_on_routine_reads_are_audited_and_the_docs_are_not(database, broker):
    with api_client(database, broker, api_audit_reads=True) as api:
        admin = log_in(api, create_user(database, "admin", None))
        before = last_audit_id(database)
        assert api.get("/nodes", headers=admin.headers).status_code == 200
        assert api.get("/audit", params={"limit": 1}, headers=admin.headers).status_code == 200
        for path in ("/docs", "/redoc", "/openapi.json", "/docs/assets/swagger-ui.css", "/health"):
            assert api.get(path).status_code == 200, path
        assert api.get("/docs/assets/no-such-file.js").status_code == 404
        rows = audit_rows(database, before)
        assert [(r["action"], r["outcome"], r["params"]) for r in rows] == [
            ("list_nodes", "ok", {"path": {}}),
            ("list_audit", "ok", {"path": {}, "query": {"limit": "1"}}),
        ]


def test_every_answer_that_carries_a_secret_is_marked_so():
    """What the rule keys on (control_api/request_audit.py): a response model with a
    field named for a secret is a SecretOut, so a read returning it is audited."""
    secret_words = ("password", "secret", "token", "otpauth", "key")
    # A public key is published by design (a node's tunnel key, for the bastion).
    not_secret = ("public_key",)
    carrying: set[str] = set()
    for route in (r for module in ROUTERS for r in module.router.routes):
        model = getattr(route, "response_model", None)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        fields = [f for f in model.model_fields if not f.endswith(not_secret)]
        if any(word in field for field in fields for word in secret_words):
            assert issubclass(model, SecretOut), model.__name__
            carrying.add(model.__name__)
    assert carrying == {"TokenOut", "TotpSetupOut", "DatabaseRoleOut", "NodeCredentialsOut"}


@pytest.fixture
def history(api, actors, database) -> dict[str, Any]:
    """Six requests, one audit row each, newest last: who, what, where and how known."""
    start = datetime.now(UTC)
    before = last_audit_id(database)
    node = unique("node")
    admin, op_a, viewer_a, op_b = (
        actors.admin.headers,
        actors.operator_a.headers,
        actors.viewer_a.headers,
        actors.operator_b.headers,
    )
    answers = [
        api.post("/nodes", json={"id": node, "tenant_id": actors.tenant_a}, headers=admin),
        api.get(f"/nodes/{node}", headers=op_b),
        api.post(
            f"/nodes/{node}/commands",
            json={"type": "RESTART_AGENT", "params": {}},
            headers=viewer_a,
        ),
        api.get("/users", headers=op_a),
        api.patch(f"/nodes/{node}", json={"display_name": "Garage"}, headers=admin),
        api.get("/nodes"),
    ]
    assert [a.status_code for a in answers] == [201, 404, 403, 403, 200, 401]
    rows = audit_rows(database, before)
    assert [r["action"] for r in rows] == [
        "enroll_node",
        "get_node",
        "issue_command",
        "list_users",
        "update_node",
        "list_nodes",
    ]
    return {
        "start": start,
        "node": node,
        "ids": [r["id"] for r in rows],
        "ts": [r["ts"] for r in rows],
    }


def found(api, user, **query: Any) -> list[int]:
    response = api.get("/audit", params={"limit": 1000, **query}, headers=user.headers)
    assert response.status_code == 200, response.text
    return [row["id"] for row in response.json()["rows"]]


def test_each_filter_finds_exactly_its_rows(api, actors, history):
    r1, r2, r3, r4, r5, r6 = history["ids"]
    since = history["start"].isoformat()

    def admin_finds(**query: Any) -> list[int]:
        return found(api, actors.admin, since=since, **query)

    assert admin_finds() == [r6, r5, r4, r3, r2, r1]
    assert admin_finds(actor_user_id=actors.admin.id) == [r5, r1]
    # The address in any spelling of the same account.
    assert admin_finds(actor_email=actors.operator_b.email.upper()) == [r2]
    assert admin_finds(action="get_node") == [r2]
    assert admin_finds(outcome="denied") == [r6, r4, r3, r2]
    assert admin_finds(outcome="ok") == [r5, r1]
    # A viewer's command is refused before its node is looked at: no node in its row.
    assert admin_finds(node_id=history["node"]) == [r5, r2, r1]
    assert admin_finds(tenant_id=actors.tenant_a) == [r5, r4, r3, r1]
    assert admin_finds(tenant_id=actors.tenant_b) == [r2]
    assert admin_finds(outcome="denied", tenant_id=actors.tenant_a) == [r4, r3]
    ts = history["ts"]
    # `since` inclusive, `until` exclusive; any offset names the same instant.
    window = {
        "since": ts[2].isoformat(),
        "until": ts[4].astimezone(timezone(timedelta(hours=2))).isoformat(),
    }
    assert found(api, actors.admin, **window) == [r4, r3]
    assert found(api, actors.admin, since=ts[5].isoformat()) == [r6]
    assert found(api, actors.admin, until=ts[0].isoformat(), node_id=history["node"]) == []


def test_a_tenants_reader_filters_its_own_rows_as_its_users_were_answered(api, actors, history):
    r1, r2, r3, r4, r5, _r6 = history["ids"]
    since = history["start"].isoformat()
    assert found(api, actors.operator_a, since=since, outcome="denied") == [r4, r3]
    assert found(api, actors.operator_a, since=since, tenant_id=actors.tenant_b) == []
    # Its probe of tenant A's node shows as the 404 it got, never as `denied`.
    assert found(api, actors.operator_b, since=since) == [r2]
    assert found(api, actors.operator_b, since=since, outcome="not_found") == [r2]
    assert found(api, actors.operator_b, since=since, outcome="denied") == []
    assert found(api, actors.operator_a, since=since) == [r5, r4, r3, r1]
    assert found(api, actors.operator_a, since=since, node_id=history["node"]) == [r5, r1]


def test_the_cursor_walks_every_page_once(api, actors, history):
    r1, r2, r3, r4, r5, r6 = history["ids"]
    pages, cursor = [], None
    while True:
        query: dict[str, Any] = {"since": history["start"].isoformat(), "limit": 2}
        if cursor is not None:
            query["cursor"] = cursor
        body = api.get("/audit", params=query, headers=actors.admin.headers).json()
        pages.append([row["id"] for row in body["rows"]])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == [[r6, r5], [r4, r3], [r2, r1]]
    # The cursor is the id of a page's last row; a page that ends the log says so.
    last = api.get(
        "/audit", params={"node_id": history["node"], "cursor": r2}, headers=actors.admin.headers
    ).json()
    assert (last["rows"][0]["id"], last["next_cursor"]) == (r1, None)


@pytest.mark.parametrize(
    ("query", "where"),
    [
        ({"since": "2026-01-01T00:00:00"}, ["query", "since"]),  # no offset
        ({"until": "yesterday"}, ["query", "until"]),
        ({"outcome": "maybe"}, ["query", "outcome"]),
        ({"actor_email": "not an address"}, ["query", "actor_email"]),
        ({"actor_user_id": "0"}, ["query", "actor_user_id"]),
        ({"tenant_id": str(2**63)}, ["query", "tenant_id"]),
        ({"action": "list_nodes; DROP TABLE audit_log"}, ["query", "action"]),
        ({"node_id": "x" * 65}, ["query", "node_id"]),
        ({"cursor": "-1"}, ["query", "cursor"]),
        ({"limit": "1001"}, ["query", "limit"]),
    ],
)
def test_a_bad_filter_is_refused_with_where_and_why(api, actors, query, where):
    response = api.get("/audit", params=query, headers=actors.admin.headers)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == where
    assert error["msg"]


def test_a_time_range_that_ends_before_it_starts_is_refused(api, actors):
    now = datetime.now(UTC)
    response = api.get(
        "/audit",
        params={"since": now.isoformat(), "until": (now - timedelta(hours=1)).isoformat()},
        headers=actors.admin.headers,
    )
    assert (response.status_code, response.json()) == (
        422,
        {"detail": "since must be before until"},
    )
