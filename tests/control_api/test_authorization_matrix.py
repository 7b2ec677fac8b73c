"""Every route x {admin, operator of tenant A, viewer of tenant A, operator of tenant B,
anonymous}: the expected status, and an audit row for each attempt but a routine read
that succeeded (none of these reads reveals a secret; reads are audited only with
WATTFLEET_API_AUDIT_READS, tests/control_api/test_audit_queries.py).

The objects addressed belong to tenant A. Operator B gets 404 for them, never 403, so
ids of other tenants' objects do not leak; the audit row still says `denied`.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from control_api.routes import audit, auth, commands, nodes, tariffs, tenants, users
from tests.control_api.test_tunnel_routes import BASTION
from tests.support.api_client import api_client
from tests.support.control_api import (
    PASSWORD,
    User,
    audit_rows,
    create_user,
    last_audit_id,
    log_in,
)
from tests.support.fleet import create_tenant, unique
from tests.support.services import Broker

pytestmark = pytest.mark.integration

ACTORS = ("admin", "operator_a", "viewer_a", "operator_b", "anonymous")


@dataclass
class World:
    api: Any
    users: dict[str, User | None]
    tenant_a: int
    tenant_b: int

    def enroll(self) -> str:
        node_id = unique("node")
        response = self.api.post(
            "/nodes",
            json={"id": node_id, "tenant_id": self.tenant_a},
            headers=self.users["admin"].headers,  # type: ignore[union-attr]
        )
        assert response.status_code == 201, response.text
        return node_id

    def as_admin(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.api.request(method, path, headers=self.users["admin"].headers, **kwargs)  # type: ignore[union-attr]
        assert response.status_code < 300, response.text
        return response.json() if response.content else None


@pytest.fixture(scope="module")
def world(database) -> Iterator[World]:
    workdir = Path(tempfile.mkdtemp(prefix="wattfleet-broker-"))
    workdir.chmod(0o755)
    broker = Broker(workdir).start()
    try:
        with api_client(database, broker, **BASTION) as api:
            tenant_a, tenant_b = create_tenant(database), create_tenant(database)
            users: dict[str, User | None] = {
                "admin": log_in(api, create_user(database, "admin", None)),
                "operator_a": log_in(api, create_user(database, "operator", tenant_a)),
                "viewer_a": log_in(api, create_user(database, "viewer", tenant_a)),
                "operator_b": log_in(api, create_user(database, "operator", tenant_b)),
                "anonymous": None,
            }
            yield World(api, users, tenant_a, tenant_b)
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass(frozen=True)
class Case:
    action: str  # the route's name, which is the audit row's action
    method: str
    # Prepares what the request addresses; returns (path, request kwargs).
    prepare: Callable[[World], tuple[str, dict[str, Any]]]
    # Expected status for admin, operator A, viewer A, operator B, anonymous.
    expected: tuple[int, int, int, int, int]


def fixed(path: str, **kwargs: Any) -> Callable[[World], tuple[str, dict[str, Any]]]:
    return lambda w: (path.format(a=w.tenant_a), kwargs)


def with_node(suffix: str = "", **kwargs: Any) -> Callable[[World], tuple[str, dict[str, Any]]]:
    return lambda w: (f"/nodes/{w.enroll()}{suffix}", kwargs)


def with_config(w: World) -> tuple[str, dict[str, Any]]:
    node_id = w.enroll()
    w.as_admin("PUT", f"/nodes/{node_id}/config?queue=true", json={"config": {"modbus_port": 1502}})
    return f"/nodes/{node_id}/config", {}


def with_config_patch(w: World) -> tuple[str, dict[str, Any]]:
    path, _ = with_config(w)
    return f"{path}?queue=true", {"json": {"config": {"modbus_port": 1503}}}


def with_command(w: World) -> tuple[str, dict[str, Any]]:
    node_id = w.enroll()
    command = w.as_admin(
        "POST",
        f"/nodes/{node_id}/commands?queue=true",
        json={"type": "RESTART_AGENT", "params": {}},
    )
    return f"/commands/{command['id']}", {}


def with_logs(w: World) -> tuple[str, dict[str, Any]]:
    node_id = w.enroll()
    command = w.as_admin(
        "POST",
        f"/nodes/{node_id}/commands?queue=true",
        json={"type": "FETCH_LOGS", "params": {"lines": 10}},
    )
    return f"/nodes/{node_id}/logs", {"params": {"command_id": command["id"]}}


def with_user(suffix: str = "", **kwargs: Any) -> Callable[[World], tuple[str, dict[str, Any]]]:
    def prepare(w: World) -> tuple[str, dict[str, Any]]:
        user = w.as_admin(
            "POST",
            "/users",
            json={
                "email": f"{unique('u')}@example.com",
                "password": "x" * 12,
                "role": "viewer",
                "tenant_id": w.tenant_a,
            },
        )
        return f"/users/{user['id']}{suffix}", kwargs

    return prepare


def new_tenant(w: World) -> tuple[str, dict[str, Any]]:
    return "/tenants", {"json": {"slug": unique("t"), "name": "New"}}


def empty_tenant(w: World) -> tuple[str, dict[str, Any]]:
    created = w.as_admin("POST", "/tenants", json={"slug": unique("t"), "name": "Empty"})
    return f"/tenants/{created['id']}", {}


def new_node(w: World) -> tuple[str, dict[str, Any]]:
    return "/nodes", {"json": {"id": unique("node"), "tenant_id": w.tenant_a}}


def new_user(w: World) -> tuple[str, dict[str, Any]]:
    body = {
        "email": f"{unique('u')}@example.com",
        "password": "y" * 12,
        "role": "operator",
        "tenant_id": w.tenant_a,
    }
    return "/users", {"json": body}


# Each a day of its own, years ahead: never before today, never taken.
_DAYS = itertools.count(1000)


def tariff() -> dict[str, Any]:
    valid_from = date.today() + timedelta(days=next(_DAYS))
    flat = {"default_price": 0.5}
    return {
        "valid_from": valid_from.isoformat(),
        "currency": "PLN",
        "import_price": flat,
        "export_price": flat,
    }


def new_tenant_tariff(w: World) -> tuple[str, dict[str, Any]]:
    return f"/tenants/{w.tenant_a}/tariffs", {"json": tariff()}


def new_site_tariff(w: World) -> tuple[str, dict[str, Any]]:
    return f"/nodes/{w.enroll()}/tariffs", {"json": tariff()}


def scheduled_tariff(prepare: Callable[[World], tuple[str, dict[str, Any]]]) -> Any:
    """A version not yet in force, set by the admin; the path to delete it."""

    def prepared(w: World) -> tuple[str, dict[str, Any]]:
        path, kwargs = prepare(w)
        w.as_admin("POST", path, **kwargs)
        return f"{path}/{kwargs['json']['valid_from']}", {}

    return prepared


ADMIN_ONLY = (200, 403, 403, 403, 401)
EVERYONE = (200, 200, 200, 200, 401)
TENANT_A_READ = (200, 200, 200, 404, 401)
TENANT_A_COMMAND = (202, 202, 403, 404, 401)
CHARGE = {"type": "FORCE_CHARGE", "params": {"power_w": 1000, "duration_s": 60}}
TUNNEL = {"reason": "debugging", "remote_port": 20022}

CASES = [
    Case("me", "GET", fixed("/auth/me"), EVERYONE),
    Case("totp_setup", "POST", fixed("/auth/totp", json={"password": PASSWORD}), EVERYONE),
    Case(
        "totp_confirm",
        "POST",
        fixed("/auth/totp/confirm", json={"code": "000000"}),
        (400, 400, 400, 400, 401),
    ),
    Case("list_tenants", "GET", fixed("/tenants"), EVERYONE),
    Case("create_tenant", "POST", new_tenant, (201, 403, 403, 403, 401)),
    Case("get_tenant", "GET", fixed("/tenants/{a}"), TENANT_A_READ),
    Case("update_tenant", "PATCH", fixed("/tenants/{a}", json={"name": "A"}), ADMIN_ONLY),
    Case("delete_tenant", "DELETE", empty_tenant, (204, 403, 403, 403, 401)),
    Case("reset_database_role", "POST", fixed("/tenants/{a}/database-role"), ADMIN_ONLY),
    Case("list_users", "GET", fixed("/users"), ADMIN_ONLY),
    Case("create_user", "POST", new_user, (201, 403, 403, 403, 401)),
    Case("get_user", "GET", with_user(), ADMIN_ONLY),
    Case("update_user", "PATCH", with_user(json={"role": "operator"}), ADMIN_ONLY),
    Case("delete_user", "DELETE", with_user(), (204, 403, 403, 403, 401)),
    Case("list_nodes", "GET", fixed("/nodes"), EVERYONE),
    Case("enroll_node", "POST", new_node, (201, 403, 403, 403, 401)),
    Case("get_node", "GET", with_node(), TENANT_A_READ),
    Case("get_node_logs", "GET", with_logs, TENANT_A_READ),
    Case("update_node", "PATCH", with_node(json={"display_name": "x"}), ADMIN_ONLY),
    Case("rotate_credentials", "POST", with_node("/credentials"), ADMIN_ONLY),
    Case("disable_node", "POST", with_node("/disable"), ADMIN_ONLY),
    Case("enable_node", "POST", with_node("/enable"), ADMIN_ONLY),
    Case("issue_command", "POST", with_node("/commands?queue=true", json=CHARGE), TENANT_A_COMMAND),
    Case("list_commands", "GET", with_node("/commands"), TENANT_A_READ),
    Case("get_command", "GET", with_command, TENANT_A_READ),
    Case("get_config", "GET", with_config, TENANT_A_READ),
    Case(
        "put_config",
        "PUT",
        with_node("/config?queue=true", json={"config": {"modbus_port": 502}}),
        TENANT_A_COMMAND,
    ),
    Case("patch_config", "PATCH", with_config_patch, TENANT_A_COMMAND),
    Case(
        "update_agent",
        "POST",
        with_node("/update?queue=true", json={"version": "0.2.0"}),
        TENANT_A_COMMAND,
    ),
    Case(
        "open_tunnel",
        "POST",
        with_node("/tunnel?queue=true", json=TUNNEL),
        (202, 403, 403, 403, 401),
    ),
    Case("close_tunnel", "DELETE", with_node("/tunnel?queue=true"), (202, 403, 403, 403, 401)),
    Case("get_safety_lock", "GET", with_node("/safety-lock"), TENANT_A_READ),
    Case(
        "lock_site",
        "PUT",
        with_node("/safety-lock", json={"reason": "storm warning"}),
        (202, 403, 403, 403, 401),
    ),
    Case(
        "unlock_site",
        "DELETE",
        with_node("/safety-lock", params={"reason": "storm over"}),
        (202, 403, 403, 403, 401),
    ),
    Case("list_tenant_tariffs", "GET", fixed("/tenants/{a}/tariffs"), TENANT_A_READ),
    Case("set_tenant_tariff", "POST", new_tenant_tariff, (201, 403, 403, 403, 401)),
    Case("delete_tenant_tariff", "DELETE", scheduled_tariff(new_tenant_tariff), ADMIN_ONLY),
    Case("list_site_tariffs", "GET", with_node("/tariffs"), TENANT_A_READ),
    Case("set_site_tariff", "POST", new_site_tariff, (201, 403, 403, 403, 401)),
    Case("delete_site_tariff", "DELETE", scheduled_tariff(new_site_tariff), ADMIN_ONLY),
    Case("get_effective_tariff", "GET", with_node("/tariff"), TENANT_A_READ),
    Case("list_audit", "GET", fixed("/audit?limit=5"), (200, 200, 403, 200, 401)),
    Case("verify_audit", "GET", fixed("/audit/verify"), ADMIN_ONLY),
]


def test_the_matrix_covers_every_route(world):
    audited = {
        route.name
        for module in (audit, auth, commands, nodes, tariffs, tenants, users)
        for route in module.router.routes
        if route.name != "login"
    }
    assert audited == {case.action for case in CASES}


@pytest.mark.parametrize("actor", range(len(ACTORS)), ids=ACTORS)
@pytest.mark.parametrize("case", CASES, ids=[c.action for c in CASES])
def test_route_answers_and_audits_each_attempt(world, database, case, actor):
    path, kwargs = case.prepare(world)
    user = world.users[ACTORS[actor]]
    headers = user.headers if user else {}
    before = last_audit_id(database)
    response = world.api.request(case.method, path, headers=headers, **kwargs)
    assert response.status_code == case.expected[actor], response.text
    rows = audit_rows(database, before, action=case.action)
    if case.method == "GET" and response.status_code < 400:
        assert rows == []
        return
    assert len(rows) == 1, rows
    [row] = rows
    assert row["status_code"] == response.status_code
    assert row["actor_email"] == (user.email if user else None)
    expected_outcome = {200: "ok", 201: "ok", 202: "ok", 204: "ok", 400: "invalid"}.get(
        response.status_code, "denied"
    )
    assert row["outcome"] == expected_outcome
    if user is not None and user.tenant_id is not None:
        assert row["tenant_id"] == user.tenant_id
