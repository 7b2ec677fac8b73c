"""A compromised node against the API's ack path: whatever it publishes on its acks topic,
every other ack is still stored, new commands still go out, and `/readiness` tells the
truth. A malformed ack is dropped and counted; one the database refuses is dropped,
counted and never delivered again; one the database cannot take *now* is retried off
the network thread, and readiness says acks are stuck meanwhile."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient

from contract import topics
from tests.support.api_client import api_client
from tests.support.control_api import User, create_user, dropped_by_reason, log_in
from tests.support.fake_node import CHARGE, FakeNode, command_state, online_node
from tests.support.fleet import create_tenant, publish_all, unique
from tests.support.services import Broker, Database, wait_for

pytestmark = pytest.mark.integration


def dropped_acks(api) -> dict[str, float]:
    return dropped_by_reason(api, "wattfleet_api_acks_dropped_total")


def dropped(**counts: float) -> dict[str, float]:
    """Every reason, at 0 unless given: all are shown from the start."""
    return {"malformed": 0, "unknown_command": 0, "refused": 0, **counts}


def issue(api: TestClient, admin: User, node: FakeNode) -> str:
    response = api.post(f"/nodes/{node.id}/commands", json=CHARGE, headers=admin.headers)
    assert response.status_code == 202, response.text
    command_id: str = response.json()["id"]
    wait_for(lambda: command_id in {c["id"] for c in node.commands}, 10, "the command")
    return command_id


def stored_state(database: Database, command_id: str) -> str:
    with database.connect() as conn:
        state: str = conn.execute(
            "SELECT state FROM commands WHERE id = %s", (command_id,)
        ).fetchone()[0]
    return state


@contextmanager
def database_refusing(database: Database, detail: str, sqlstate: str) -> Iterator[None]:
    """The database raises `sqlstate` for any command event with this exact detail: a
    stand-in for whatever it may refuse (22000: a data exception, refused for good;
    40P01: a deadlock, worth trying again). Other tests' events are untouched."""
    name = f"refuse_{uuid.uuid4().hex[:12]}"
    with database.connect() as conn:
        conn.execute(
            f"""
            CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.detail = '{detail}' THEN
                    RAISE EXCEPTION 'refused by the test' USING ERRCODE = '{sqlstate}';
                END IF;
                RETURN NEW;
            END $$
            """
        )
        conn.execute(
            f"CREATE TRIGGER {name} BEFORE INSERT ON command_events"
            f" FOR EACH ROW EXECUTE FUNCTION {name}()"
        )
    try:
        yield
    finally:
        with database.connect() as conn:
            conn.execute(f"DROP TRIGGER {name} ON command_events")
            conn.execute(f"DROP FUNCTION {name}()")


@pytest.fixture
def client_id() -> str:
    """One API session across restarts: acks left unacknowledged come back to it."""
    return unique("control-api")


def test_an_ack_the_database_refuses_is_dropped_and_blocks_no_other(
    database: Database, broker: Broker, client_id: str
):
    poison = unique("poison")
    with api_client(database, broker, mqtt_client_id=client_id) as api:
        admin = log_in(api, create_user(database, "admin", None))
        tenant = create_tenant(database)
        with online_node(api, admin, tenant, database, broker) as node:
            refused, behind = issue(api, admin, node), issue(api, admin, node)
            with database_refusing(database, poison, "22000"):
                node.ack(refused, "succeeded", poison)
                node.ack(behind, "succeeded", "charging")
                done = command_state(api, admin, behind, "succeeded", timeout=20)
                assert done["detail"] == "charging"
                assert stored_state(database, refused) == "sent"
                assert dropped_acks(api) == dropped(refused=1)
                assert api.get("/readiness").status_code == 200
    # The refused ack was acknowledged to the broker: a restarted API (same session) does
    # not get it again, even with the database willing now.
    with api_client(database, broker, mqtt_client_id=client_id) as api:
        log_in(api, admin)
        with online_node(api, admin, tenant, database, broker) as node:
            later = issue(api, admin, node)
            node.ack(later, "succeeded", "charging")
            command_state(api, admin, later, "succeeded", timeout=20)
        assert stored_state(database, refused) == "sent"
        assert dropped_acks(api) == dropped()


def test_malformed_and_foreign_acks_are_dropped_counted_and_block_nothing(
    database: Database, broker: Broker
):
    with api_client(database, broker) as api:
        admin = log_in(api, create_user(database, "admin", None))
        tenant = create_tenant(database)
        with (
            online_node(api, admin, tenant, database, broker) as node,
            online_node(api, admin, tenant, database, broker) as other,
        ):
            mine, theirs = issue(api, admin, node), issue(api, admin, other)
            ack: dict[str, Any] = {"state": "succeeded", "ts": "2030-01-01T00:00:00+00:00"}
            malformed: list[bytes | str] = [
                json.dumps({**ack, "id": "cmd\x00-1"}),  # PostgreSQL text cannot hold NUL
                json.dumps({**ack, "id": mine, "detail": "x\x00"}),
                '{"id": "\\ud800", "state": "failed"}',  # a lone surrogate
                b"\xff\xfe not UTF-8",
                "[" * 50_000 + "]" * 50_000,
                '{"id": ' + "9" * 5_000 + "}",
                json.dumps({**ack, "id": mine, "state": "expired"}),  # not a node's to say
                json.dumps({**ack, "id": mine, "detail": "x" * 2_001}),
            ]
            publish_all(node.client, [(topics.acks(node.id), p) for p in malformed])
            node.ack(theirs, "succeeded", "not mine to answer")  # another node's command
            node.ack(mine, "succeeded", "charging")
            done = command_state(api, admin, mine, "succeeded", timeout=20)
            assert [e["state"] for e in done["events"]] == ["pending", "sent", "succeeded"]
            assert stored_state(database, theirs) == "sent"
            assert dropped_acks(api) == dropped(malformed=len(malformed), unknown_command=1)
            assert api.get("/readiness").json() == {"database": True, "broker": True, "acks": True}


def test_an_ack_the_database_cannot_take_now_is_retried_and_readiness_says_so(
    database: Database, broker: Broker
):
    """The database answers (SELECT 1) but keeps failing this ack's write with an error
    worth retrying: the ack waits, acks behind it wait (in order), readiness is 503 with
    `acks: false`, and commands still go out; once the database takes it, all flow."""
    deadlock = unique("deadlock")
    with api_client(database, broker) as api:
        admin = log_in(api, create_user(database, "admin", None))
        with online_node(api, admin, create_tenant(database), database, broker) as node:
            first, second = issue(api, admin, node), issue(api, admin, node)
            with database_refusing(database, deadlock, "40P01"):
                node.ack(first, "succeeded", deadlock)
                node.ack(second, "succeeded", "charging")
                wait_for(lambda: api.get("/readiness").status_code == 503, 20, "acks stuck")
                assert api.get("/readiness").json() == {
                    "database": True,
                    "broker": True,
                    "acks": False,
                }
                issue(api, admin, node)  # the network thread still publishes
                assert stored_state(database, second) == "sent"
            command_state(api, admin, first, "succeeded", timeout=40)
            command_state(api, admin, second, "succeeded", timeout=10)
            assert api.get("/readiness").status_code == 200
            assert dropped_acks(api) == dropped()
