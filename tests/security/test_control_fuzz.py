"""Property-based fuzzing (hypothesis) of both ends of the command channel, bounded to a
few seconds each: the agent's command parser (`CommandHandler.handle`) and the API's ack
handler (`CommandDispatcher.handle_ack`, what the broker link calls for every ack).

Whatever a hostile hub account or node publishes, the agent answers every payload with
acks the hub can store (a refusal under the command's id whenever one can be read) and
never raises; the API never raises (the database is up here, so not even its "retry
later") and a command's state only ever moves the way its state machine allows."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus.client import ModbusTcpClient

from contract.commands import MAX_COMMAND_BYTES, Ack, CommandType, sign
from control_api.dispatcher import FINAL_STATES
from edge.commands import CommandHandler, LogRing, SeenCommands
from edge.inverter import SunSpecDevice
from edge.registers import sunspec_map
from edge.safety_lock import SafetyLock
from tests.support.api_client import api_client
from tests.support.fleet import create_node, create_tenant
from tests.support.services import Broker, Database, free_port

NODE = "fuzzed-node"
SECRET = b"fuzz-secret"
# Bounded for CI: each property runs in a few seconds; no example database on disk.
BOUNDED = settings(
    max_examples=150,
    deadline=None,
    database=None,
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


# -- the agent: CommandHandler.handle ------------------------------------------------------


class Agent:
    """A CommandHandler with everything real but the inverter, which is a closed port (a
    command that gets as far as the device fails), recording what it publishes."""

    def __init__(self, state_dir: Path) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.restarts = 0
        client = ModbusTcpClient("127.0.0.1", port=free_port(), timeout=0.2, retries=0)
        self.handler = CommandHandler(
            NODE,
            SECRET,
            SunSpecDevice(client, 1, sunspec_map()),
            SeenCommands(state_dir / "seen.sqlite3"),
            LogRing(),
            lambda kind, body: self.sent.append((kind, body)),
            lambda: datetime.now(UTC),
            self._restart,
            SafetyLock(state_dir, False, lambda: datetime.now(UTC)),
        )

    def _restart(self) -> None:
        self.restarts += 1

    def acks(self, payload: bytes) -> list[Ack]:
        """Handles one payload; the acks it published, each as the hub validates it."""
        self.sent.clear()
        self.handler.handle(payload)
        return [Ack.model_validate_json(json.dumps(b)) for kind, b in self.sent if kind == "acks"]


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Agent:
    return Agent(tmp_path_factory.mktemp("agent"))


def signed(command_type: CommandType, command_id: str) -> dict[str, Any]:
    """A command as the hub signs it, id first, params empty (valid for some types)."""
    now = datetime.now(UTC)
    body: dict[str, Any] = {
        "id": command_id,
        "type": command_type.value,
        "params": {},
        "issued_at": now.isoformat(),
        "expires_at": (now + timedelta(minutes=1)).isoformat(),
    }
    body["sig"] = sign(NODE, body, SECRET)
    return body


@st.composite
def near_valid_commands(draw: st.DrawFn) -> tuple[str, bytes]:
    """(id, payload): a signed command with its id first, as the hub writes it, then
    broken in one way: a field replaced (re-signed or not), a key dropped or added, deep
    nesting, a huge integer, raw bytes spliced in, truncated, or over the size bound."""
    command_id = uuid.uuid4().hex
    body = signed(draw(st.sampled_from(list(CommandType))), command_id)
    how = draw(
        st.sampled_from(
            ["replace", "replace_signed", "drop", "add", "deep", "bigint", "splice", "cut", "huge"]
        )
    )
    if how in ("replace", "replace_signed"):
        body[draw(st.sampled_from(["type", "params", "issued_at", "expires_at", "sig"]))] = draw(
            json_values
        )
        if how == "replace_signed":
            body["sig"] = sign(NODE, body, SECRET)
    elif how == "drop":
        del body[draw(st.sampled_from(["type", "params", "issued_at", "expires_at", "sig"]))]
    elif how == "add":
        body[draw(st.text(max_size=8).filter(lambda k: k != "id"))] = draw(json_values)
    text = json.dumps(body)
    if how == "deep":
        depth = draw(st.integers(min_value=150, max_value=50_000))
        text = text[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}"
    elif how == "bigint":
        text = text[:-1] + ', "x": ' + "9" * draw(st.integers(4_000, 6_000)) + "}"
    payload = text.encode()
    # Everything after the id may be damaged; the id itself stays readable.
    after_id = len(json.dumps({"id": command_id})) - 1
    at = draw(st.integers(min_value=after_id, max_value=len(payload)))
    if how == "splice":
        payload = payload[:at] + draw(st.binary(min_size=1, max_size=20)) + payload[at:]
    elif how == "cut":
        payload = payload[:at]
    elif how == "huge":
        payload = payload[:-1] + b', "x": "' + b"x" * MAX_COMMAND_BYTES + b'"}'
    return command_id, payload


@BOUNDED
@given(payload=st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_any_payload_gets_one_storable_rejection(agent: Agent, payload: bytes):
    acks = agent.acks(payload)
    assert [a.state for a in acks] == ["rejected"]
    assert acks[0].detail


@BOUNDED
@given(command=near_valid_commands())
def test_a_broken_command_is_rejected_under_its_id(agent: Agent, command: tuple[str, bytes]):
    command_id, payload = command
    acks = agent.acks(payload)
    assert acks, "no ack at all"
    assert {a.id for a in acks} == {command_id}
    # A refusal is the only answer; a command that still passed every check ran and
    # ended (the inverter is unreachable, so storage commands fail).
    states = [a.state for a in acks]
    assert states == ["rejected"] or (
        states[0] == "received" and states[-1] in ("succeeded", "failed")
    ), states
    assert all(a.detail for a in acks if a.state == "rejected")


# -- the API: CommandDispatcher.handle_ack -------------------------------------------------

RANK = {"pending": 0, "sent": 1, "received": 2} | dict.fromkeys(FINAL_STATES, 3)


@pytest.fixture
def dispatcher(database: Database, broker: Broker) -> Iterator[Any]:
    with api_client(database, broker, command_check_interval_s=3600) as api:
        yield api.app.state.dispatcher  # type: ignore[attr-defined]


class Commands:
    """The commands table as the test sees it, over one autocommit connection."""

    def __init__(self, database: Database) -> None:
        self.conn = database.connect()
        self.tenant = create_tenant(database)

    def insert(self, node_id: str, state: str) -> str:
        command_id = uuid.uuid4().hex
        now = datetime.now(UTC)
        self.conn.execute(
            "INSERT INTO commands (id, node_id, tenant_id, type, params, state, issued_at,"
            " expires_at) VALUES (%s, %s, %s, 'RESTART_AGENT', '{}', %s, %s, %s)",
            (command_id, node_id, self.tenant, state, now, now + timedelta(minutes=5)),
        )
        return command_id

    def stored(self, command_id: str) -> tuple[str, str]:
        """(state, detail)"""
        state, detail = self.conn.execute(
            "SELECT state, detail FROM commands WHERE id = %s", (command_id,)
        ).fetchone()
        return state, detail


@st.composite
def acks_about(draw: st.DrawFn, mine: str, theirs: str) -> bytes:
    """An ack payload: arbitrary bytes, or an ack-shaped object about this node's
    command, another node's, or none, with each field well-formed or not."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=200))
    body: dict[str, Any] = {
        "id": draw(st.sampled_from([mine, theirs, "no-such-command"]) | st.text(max_size=70)),
        "state": draw(
            st.sampled_from(["received", "succeeded", "failed", "rejected", "expired", "sent"])
            | json_values
        ),
        "detail": draw(st.text(max_size=30) | json_values),
        "ts": draw(st.sampled_from([datetime.now(UTC).isoformat(), "yesterday"]) | json_values),
    }
    for key in draw(st.sets(st.sampled_from(list(body)), max_size=2)):
        del body[key]
    return json.dumps(body).encode()


def test_any_ack_moves_a_command_only_forward(dispatcher: Any, database: Database):
    commands = Commands(database)
    node, other = create_node(database, commands.tenant), create_node(database, commands.tenant)
    theirs = commands.insert(other, "sent")

    def malformed() -> float:
        value: float = dispatcher.metrics.registry.get_sample_value(
            "wattfleet_api_acks_dropped_total", {"reason": "malformed"}
        )
        return value

    @BOUNDED
    @given(data=st.data(), start=st.sampled_from(["pending", "sent", "received"]))
    def acks_in_a_row(data: st.DataObject, start: str) -> None:
        mine = commands.insert(node, start)
        for _ in range(data.draw(st.integers(1, 3))):
            payload = data.draw(acks_about(mine, theirs))
            before, malformed_before = commands.stored(mine), malformed()
            dispatcher.handle_ack(node, payload)  # must not raise
            try:
                ack = Ack.model_validate_json(payload)
            except ValueError:
                assert malformed() == malformed_before + 1
                assert commands.stored(mine) == before
                continue
            moves = (
                ack.id == mine
                and before[0] not in FINAL_STATES
                and RANK[ack.state] > RANK[before[0]]
            )
            assert commands.stored(mine) == ((ack.state, ack.detail) if moves else before)
        assert commands.stored(theirs) == ("sent", "")

    try:
        acks_in_a_row()
    finally:
        commands.conn.close()
