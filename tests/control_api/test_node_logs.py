"""FETCH_LOGS answers reaching the hub: a node's log chunks on a real broker are stored by
the API (real database) and read back through `GET /nodes/{id}/logs`; whatever else a
node publishes there is dropped with a reason, counted, and holds nothing up. The real
agent's chunks arrive in tests/control_api/test_end_to_end.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from paho.mqtt.packettypes import PacketTypes

from contract import topics
from contract.commands import MAX_LOG_CHUNK_BYTES, LogChunk
from control_api.metrics import LOG_DROP_REASONS
from tests.support.api_client import api_client
from tests.support.control_api import (
    User,
    audit_rows,
    create_user,
    dropped_by_reason,
    last_audit_id,
    log_in,
)
from tests.support.fake_node import CHARGE, FakeNode, fetch_logs, online_node
from tests.support.fleet import create_tenant
from tests.support.proxy import proxy_for_database
from tests.support.services import wait_for

pytestmark = pytest.mark.integration


def issue(api: TestClient, user: User, node: FakeNode, body: dict[str, Any]) -> str:
    """A command sent to the node through the API, once the node has it."""
    response = api.post(f"/nodes/{node.id}/commands", json=body, headers=user.headers)
    assert response.status_code == 202, response.text
    command_id: str = response.json()["id"]
    wait_for(lambda: command_id in {c["id"] for c in node.commands}, 10, "the command")
    return command_id


def chunk(command_id: str, index: int, of: int, lines: list[str]) -> str:
    """A chunk as the agent builds it."""
    return LogChunk(command_id=command_id, chunk=index, of=of, lines=lines).model_dump_json()


def logs_summary(api: TestClient, user: User, command_id: str) -> Any:
    return api.get(f"/commands/{command_id}", headers=user.headers).json()["logs"]


def wait_for_lines(api: TestClient, user: User, command_id: str, count: int) -> Any:
    def arrived() -> Any:
        summary = logs_summary(api, user, command_id)
        return summary if summary["lines_received"] == count else None

    return wait_for(arrived, 10, f"{count} log lines of {command_id} stored")


def dropped_chunks(api) -> dict[str, float]:
    return dropped_by_reason(api, "wattfleet_api_log_chunks_dropped_total")


def dropped(**counts: float) -> dict[str, float]:
    """Every reason, at 0 unless given: all are shown from the start."""
    return {**dict.fromkeys(LOG_DROP_REASONS, 0.0), **counts}


def test_a_nodes_log_chunks_are_stored_and_read_back_in_order(api, actors, node, database):
    command_id = issue(api, actors.operator_a, node, fetch_logs(300))
    assert logs_summary(api, actors.operator_a, command_id) == {
        "chunks_received": 0,
        "of": None,
        "lines_received": 0,
    }
    first, second = [f"line {i}" for i in range(200)], [f"line {i}" for i in range(200, 300)]
    node.send_logs(chunk(command_id, 1, 2, second))
    assert wait_for_lines(api, actors.operator_a, command_id, 100) == {
        "chunks_received": 1,
        "of": 2,
        "lines_received": 100,
    }
    node.send_logs(chunk(command_id, 0, 2, first))
    wait_for_lines(api, actors.operator_a, command_id, 300)

    before = last_audit_id(database)
    path = f"/nodes/{node.id}/logs"
    page = api.get(
        path, params={"command_id": command_id, "limit": 1}, headers=actors.viewer_a.headers
    )
    assert page.status_code == 200, page.text
    body = page.json()
    assert (body["node_id"], body["command_id"]) == (node.id, command_id)
    assert (body["chunks_received"], body["of"], body["lines_received"]) == (2, 2, 300)
    assert [(c["chunk"], c["lines"]) for c in body["chunks"]] == [(0, first)]
    assert body["next_chunk"] == 1
    rest = api.get(
        path,
        params={"command_id": command_id, "from_chunk": 1},
        headers=actors.operator_a.headers,
    ).json()
    assert [(c["chunk"], c["lines"]) for c in rest["chunks"]] == [(1, second)]
    assert rest["next_chunk"] is None
    # Routine reads: not audited by default (the refused ones are, below).
    assert audit_rows(database, before, action="get_node_logs") == []

    # A redelivered chunk (or a second copy of one) changes nothing; the unknown command
    # behind it shows when both were handled.
    node.send_logs(chunk(command_id, 0, 2, ["not the first copy"]), chunk("no-such", 0, 1, []))
    wait_for(lambda: dropped_chunks(api)["unknown_command"] == 1, 10, "the chunk behind")
    again = api.get(path, params={"command_id": command_id}, headers=actors.admin.headers).json()
    assert [c["lines"] for c in again["chunks"]] == [first, second]
    assert dropped_chunks(api) == dropped(unknown_command=1)

    # Other commands have no logs.
    charge = issue(api, actors.operator_a, node, CHARGE)
    assert logs_summary(api, actors.operator_a, charge) is None


def test_malformed_chunks_are_dropped_counted_and_the_next_good_one_arrives(api, actors, node):
    command_id = issue(api, actors.operator_a, node, fetch_logs(5))
    charge = issue(api, actors.operator_a, node, CHARGE)
    node.send_logs(chunk(command_id, 0, 3, ["one", "two"]))
    wait_for_lines(api, actors.operator_a, command_id, 2)

    def body(**fields: Any) -> str:
        return json.dumps({"command_id": command_id, "chunk": 1, "of": 3, "lines": [], **fields})

    head = f'{{"command_id": "{command_id}", "chunk": 1, "of": 3, "lines": '
    hostile: dict[str, list[bytes | str]] = {
        "too_large": [head + json.dumps(["x" * MAX_LOG_CHUNK_BYTES]) + "}"],
        "malformed": [
            b"not json",
            b"[" * 5_000,
            "[]",
            head + '["nul \\u0000 here"]}',
            head + '["lone \\ud800 surrogate"]}',
            (head + '["').encode() + b'\xff"]}',
            head + '["x"], "extra": NaN}',
            body(chunk="1"),
            body(chunk=True),
            body(chunk=10**30),
            body(of=0),
            body(chunk=3),
            body(lines="a line"),
            body(lines=[1, 2]),
            body(lines=["x"] * 201),
            body(lines=["x" * 1_001]),
            body(command_id=7),
            body(command_id=""),
        ],
        "no_command_id": ['{"chunk": 0, "of": 1, "lines": ["an old agent\'s chunk"]}'],
        "unknown_command": [body(command_id="no-such-command"), body(command_id=charge)],
        "inconsistent": [body(of=2, lines=["three"])],
        "over_limit": [body(lines=["three", "four", "five", "six"])],
    }
    node.send_logs(*[payload for payloads in hostile.values() for payload in payloads])
    node.send_logs(body(lines=["three", "four", "five"]))
    wait_for_lines(api, actors.operator_a, command_id, 5)
    assert dropped_chunks(api) == dropped(
        **{reason: len(payloads) for reason, payloads in hostile.items()}
    )
    logs = api.get(
        f"/nodes/{node.id}/logs", params={"command_id": command_id}, headers=actors.admin.headers
    ).json()
    assert [c["lines"] for c in logs["chunks"]] == [["one", "two"], ["three", "four", "five"]]
    assert logs_summary(api, actors.operator_a, charge) is None


def test_a_node_cannot_write_into_another_nodes_logs(api, actors, node, broker, database):
    """The broker refuses a publish on another node's logs topic (PUBACK "not authorized",
    135), and a chunk naming another node's command on the sender's own topic is not
    attached to that command."""
    command_id = issue(api, actors.operator_a, node, fetch_logs(10))
    with online_node(api, actors.admin, actors.tenant_b, database, broker) as intruder:
        reasons: list[Any] = []
        intruder.client.on_publish = lambda _c, _u, _mid, reason, _p: reasons.append(reason)
        intruder.client.publish(
            topics.logs(node.id), chunk(command_id, 0, 1, ["forged on its topic"]), qos=1
        )
        wait_for(lambda: reasons, 5, "PUBACK")
        assert (reasons[0].value, reasons[0].packetType) == (135, PacketTypes.PUBACK)
        intruder.send_logs(chunk(command_id, 0, 1, ["forged under its id"]))
        wait_for(lambda: dropped_chunks(api)["unknown_command"] == 1, 10, "the forged chunk")
    node.send_logs(chunk(command_id, 0, 1, ["the node's own"]))
    wait_for_lines(api, actors.operator_a, command_id, 1)
    logs = api.get(
        f"/nodes/{node.id}/logs", params={"command_id": command_id}, headers=actors.admin.headers
    ).json()
    assert [c["lines"] for c in logs["chunks"]] == [["the node's own"]]


def test_the_logs_route_keeps_tenants_apart(api, actors, node, broker, database):
    command_id = issue(api, actors.operator_a, node, fetch_logs(10))
    node.send_logs(chunk(command_id, 0, 1, ["tenant A's line"]))
    wait_for_lines(api, actors.operator_a, command_id, 1)
    query = {"command_id": command_id}

    def get(user: User, node_id: str, **params: Any) -> Any:
        return api.get(f"/nodes/{node_id}/logs", params={**query, **params}, headers=user.headers)

    before = last_audit_id(database)
    other_tenant = get(actors.operator_b, node.id)
    assert (other_tenant.status_code, other_tenant.json()) == (404, {"detail": "node not found"})
    [row] = audit_rows(database, before, action="get_node_logs")
    assert (row["outcome"], row["tenant_id"]) == ("denied", actors.tenant_b)
    assert row["params"]["query"] == {"command_id": command_id}

    with online_node(api, actors.admin, actors.tenant_b, database, broker) as own:
        # Its own node, another node's command.
        assert get(actors.operator_b, own.id).status_code == 404
    charge = issue(api, actors.operator_a, node, CHARGE)
    wrong_type = get(actors.operator_a, node.id, command_id=charge)
    assert wrong_type.status_code == 422
    assert "not a FETCH_LOGS" in wrong_type.json()["detail"]
    assert get(actors.viewer_a, node.id).status_code == 200

    # Moved to tenant B, the node's logs from its time in tenant A stay tenant A's.
    moved = api.patch(
        f"/nodes/{node.id}", json={"tenant_id": actors.tenant_b}, headers=actors.admin.headers
    )
    assert moved.status_code == 200, moved.text
    assert get(actors.operator_b, node.id).status_code == 404
    assert get(actors.operator_a, node.id).status_code == 404
    assert get(actors.admin, node.id).json()["lines_received"] == 1


@pytest.fixture
def api_without_database(database, broker) -> Iterator[tuple[TestClient, Any]]:
    """An API whose database connections go through a proxy the test can cut."""
    proxy, url = proxy_for_database(database.url)
    try:
        with api_client(database, broker, database_url=url) as client:
            yield client, proxy
    finally:
        proxy.close()


def test_a_chunk_that_cannot_be_stored_yet_is_stored_once_the_database_returns(
    api_without_database, database, broker, caplog
):
    """Retried on the logs worker's thread; paho's network thread keeps confirming
    command publishes meanwhile."""
    api, proxy = api_without_database
    admin = log_in(api, create_user(database, "admin", None))
    with online_node(api, admin, create_tenant(database), database, broker) as node:
        command_id = issue(api, admin, node, fetch_logs(10))
        proxy.cut()
        node.send_logs(chunk(command_id, 0, 1, ["kept until stored"]))
        wait_for(
            lambda: [r for r in caplog.records if r.exc_info and node.id in r.getMessage()],
            20,
            "the chunk's write to fail",
        )
        link = api.app.state.link
        assert link.publish_command(node.id, json.dumps({"id": "probe"}))
        wait_for(lambda: {"id": "probe"} in node.commands, 10, "the probe at the node")
        proxy.restore()
        wait_for_lines(api, admin, command_id, 1)
        assert dropped_chunks(api) == dropped()
