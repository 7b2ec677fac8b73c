"""Input no client should send: every request still gets a 4xx with a message saying
what was wrong, and exactly one audit row; nothing it carried (NUL, a lone surrogate,
NaN) breaks the answer or the audit log."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.control_api import audit_rows, last_audit_id

pytestmark = pytest.mark.integration

SURROGATE = "\\ud800"  # as JSON spells it: Python decodes it to a lone surrogate
PASSWORD = "a long enough password"


def send(api: Any, database: Any, method: str, path: str, body: bytes, headers: Any) -> Any:
    """The answer to a raw JSON body, after checking it was a 4xx and audited once."""
    before = last_audit_id(database)
    response = api.request(
        method, path, content=body, headers={"Content-Type": "application/json", **headers}
    )
    assert 400 <= response.status_code < 500, response.text
    rows = audit_rows(database, before)
    assert [row["status_code"] for row in rows] == [response.status_code]
    return response


def errors_at(response: Any, *loc: Any) -> list[str]:
    return [e["msg"] for e in response.json()["detail"] if tuple(e["loc"]) == ("body", *loc)]


def surrogate_cases(node_id: str, user_id: int, tenant_id: int) -> list[tuple[str, str, str]]:
    """(method, path, JSON body): a lone surrogate goes where the body says `<>`."""
    return [
        ("POST", "/auth/login", '{"email": "<>@example.com", "password": "x"}'),
        ("POST", "/auth/login", '{"email": "a@example.com", "password": "<>"}'),
        ("POST", "/auth/login", '{"email": "a@example.com", "password": "x", "totp_code": "<>"}'),
        ("POST", "/auth/totp/confirm", '{"code": "<>"}'),
        ("POST", "/tenants", '{"slug": "<>", "name": "n"}'),
        ("POST", "/tenants", '{"slug": "s", "name": "<>"}'),
        ("PATCH", f"/tenants/{tenant_id}", '{"name": "<>"}'),
        (
            "POST",
            "/users",
            f'{{"email": "<>@example.com", "password": "{PASSWORD}", "role": "admin"}}',
        ),
        ("POST", "/users", '{"email": "a@example.com", "password": "<>", "role": "admin"}'),
        ("PATCH", f"/users/{user_id}", '{"password": "<>"}'),
        ("POST", "/nodes", f'{{"id": "<>", "tenant_id": {tenant_id}}}'),
        ("POST", "/nodes", f'{{"id": "n-1", "tenant_id": {tenant_id}, "display_name": "<>"}}'),
        ("PATCH", f"/nodes/{node_id}", '{"display_name": "<>"}'),
        ("PUT", f"/nodes/{node_id}/config", '{"config": {"modbus_host": "<>"}}'),
        ("PUT", f"/nodes/{node_id}/config", '{"config": {"<>": 1}}'),
    ]


def test_a_lone_surrogate_in_any_string_field_is_refused_and_audited(api, actors, node, database):
    for method, path, body in surrogate_cases(node.id, actors.viewer_a.id, actors.tenant_a):
        raw = body.replace("<>", "x" + SURROGATE).encode()
        response = send(api, database, method, path, raw, actors.admin.headers)
        assert response.status_code == 422, (path, body, response.text)
        assert "U+D800 (NUL or a lone surrogate)" in response.text, (path, body, response.text)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        # Where the command whitelist's own types (a literal, a pattern) refuse it.
        ("/commands", '{"type": "SET_MODE", "params": {"mode": "<>"}}'),
        ("/update", '{"version": "<>"}'),
    ],
)
def test_a_lone_surrogate_in_a_command_is_refused_and_audited(
    api, actors, node, database, path, body
):
    raw = body.replace("<>", "x" + SURROGATE).encode()
    response = send(api, database, "POST", f"/nodes/{node.id}{path}", raw, actors.admin.headers)
    assert response.status_code == 422
    assert "unicode string" in response.text


@pytest.mark.parametrize("path", ["/commands/x%00y", "/nodes/x%00y", "/audit?node_id=x%00y"])
def test_nul_in_a_path_or_query_is_refused_before_the_database(api, actors, database, path):
    response = send(api, database, "GET", path, b"", actors.admin.headers)
    assert response.status_code == 422
    assert "U+0000" in response.text
    assert "PostgreSQL" not in response.text


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e309"])
def test_non_finite_numbers_in_command_params_are_refused(api, actors, node, database, number):
    body = f'{{"type": "FORCE_CHARGE", "params": {{"power_w": {number}, "duration_s": 600}}}}'
    response = send(
        api,
        database,
        "POST",
        f"/nodes/{node.id}/commands",
        body.encode(),
        actors.operator_a.headers,
    )
    assert response.status_code == 422
    assert errors_at(response, "FORCE_CHARGE", "params", "power_w") == [
        "Input should be a finite number"
    ]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b'{"email": ',
        b"\xff\xfe\x00",
        b'{"email": NaN, "password": "x"}',
        b'{"email": 1e309, "password": "x"}',
        b'{"email": "a@example.com", "password": "x"} trailing',
        b"[]",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"email": "a\\u0000@example.com", "password": "x"}',
    ],
)
def test_malformed_json_to_login_is_refused_and_audited(api, database, body):
    response = send(api, database, "POST", "/auth/login", body, {})
    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"]
    assert "input" not in response.json()["detail"][0]


def test_a_refused_password_is_not_echoed(api, actors, database):
    response = send(
        api,
        database,
        "POST",
        "/users",
        b'{"email": "a@example.com", "password": "hunter2"}',
        actors.admin.headers,
    )
    assert response.status_code == 422
    assert "hunter2" not in response.text


def test_a_body_nested_too_deep_is_refused(api, actors, node, database):
    body = b'{"config": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = send(
        api, database, "PUT", f"/nodes/{node.id}/config", body, actors.operator_a.headers
    )
    assert response.status_code in (400, 422)


def test_a_body_over_the_size_limit_is_refused_before_it_is_read_whole(api, actors, node, database):
    limit = api.app.state.settings.api_max_body_bytes
    body = b'{"config": {"modbus_host": "' + b"x" * limit + b'"}}'
    response = send(
        api, database, "PUT", f"/nodes/{node.id}/config", body, actors.operator_a.headers
    )
    assert response.status_code == 413


def test_a_streamed_body_over_the_size_limit_is_refused(api, actors, node, database):
    """No Content-Length to check up front: counted as it arrives."""
    limit = api.app.state.settings.api_max_body_bytes

    def chunks() -> Iterator[bytes]:
        yield b'{"config": {"modbus_host": "'
        for _ in range(limit // 65536 + 2):
            yield b"x" * 65536
        yield b'"}}'

    before = last_audit_id(database)
    response = api.request(
        "PUT",
        f"/nodes/{node.id}/config",
        content=chunks(),
        headers={"Content-Type": "application/json", **actors.operator_a.headers},
    )
    assert response.status_code == 413, response.text
    assert [row["status_code"] for row in audit_rows(database, before)] == [413]
