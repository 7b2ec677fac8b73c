"""Signed commands end to end: the hub's account publishes, the agent checks, runs on the
simulated inverter, and acks."""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from contract import topics
from contract.commands import (
    MAX_ACK_DETAIL_CHARS,
    MAX_COMMAND_BYTES,
    MAX_LOG_CHUNK_BYTES,
    MAX_LOG_CHUNK_LINES,
    MAX_LOG_CHUNKS,
    MAX_LOG_LINE_CHARS,
    Ack,
    CommandType,
    ConfigPushParams,
    FetchLogsParams,
    LogChunk,
    NoParams,
    PowerParams,
    SetModeParams,
    build_command,
    sign,
)
from edge.commands import CommandHandler, LogRing, SeenCommands
from edge.config_push import MARKER_NAME, ConfigPush, adopt_legacy_marker
from edge.safety_lock import SafetyLock
from tests.conftest import SIMULATOR_UNIT
from tests.support.agent import AgentProcess
from tests.support.fleet import Node, dynsec, mqtt_client, publish_all, publish_json, unique
from tests.support.services import stop_process, wait_for

pytestmark = pytest.mark.integration
SECRET = b"test-secret"


class Hub:
    """The control API's broker account: sends commands, collects acks and logs."""

    def __init__(self, broker, node_id: str) -> None:
        self.node_id = node_id
        self.client = mqtt_client(broker, "control-api", broker.passwords["control-api"])
        self.acks: dict[str, list[dict[str, Any]]] = {}
        self.logs: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.message_callback_add(topics.acks(node_id), self._on_ack)
        self.client.message_callback_add(topics.logs(node_id), self._on_log)
        self.client.subscribe([(topics.acks(node_id), 1), (topics.logs(node_id), 1)])
        assert subscribed.wait(5)

    def _on_ack(self, _c, _u, msg) -> None:
        body = json.loads(msg.payload)
        with self._lock:
            self.acks.setdefault(body["id"], []).append(body)

    def _on_log(self, _c, _u, msg) -> None:
        self.logs.append(json.loads(msg.payload))

    def send(
        self,
        command_type,
        params,
        *,
        secret=SECRET,
        expires_in_s=60,
        command_id=None,
        raw: dict[str, Any] | None = None,
    ) -> str:
        now = datetime.now(UTC)
        body = raw or build_command(
            self.node_id,
            secret,
            command_id or uuid.uuid4().hex,
            command_type,
            params,
            now,
            now + timedelta(seconds=expires_in_s),
        )
        publish_json(self.client, topics.commands(self.node_id), body)
        return str(body.get("id", "unknown"))

    def outcome(self, command_id: str, timeout: float = 20) -> dict[str, Any]:
        """The final ack (not `received`) of a command."""

        def final():
            with self._lock:
                return next(
                    (a for a in self.acks.get(command_id, []) if a["state"] != "received"), None
                )

        ack: dict[str, Any] = wait_for(final, timeout, f"final ack of {command_id}")
        return ack


@contextmanager
def agent_and_hub(broker, simulator, tmp_path, supervised: bool, **settings: Any):
    """A freshly enrolled node's agent (optionally restarted like systemd would) and the
    hub's broker account listening to it."""
    node = Node(unique("node"), 0, "node-password")
    with dynsec(broker) as admin:
        admin.add_node(node.id, node.password)
    agent = AgentProcess(
        tmp_path, broker, node, simulator, SIMULATOR_UNIT, node_secret=SECRET.decode(), **settings
    )
    agent.supervise() if supervised else agent.start()
    hub = Hub(broker, node.id)
    try:
        wait_for(lambda: "connected to" in agent.log_path.read_text(), 20, "agent connected")
        yield agent, hub
    finally:
        if supervised:
            agent.stop_supervising()
        elif agent.proc.poll() is None:
            stop_process(agent.proc)
        agent.release()


@pytest.fixture
def node_agent(broker, simulator, tmp_path) -> Iterator[tuple[AgentProcess, Hub]]:
    with agent_and_hub(broker, simulator, tmp_path, False, poll_interval_s=1.0) as pair:
        yield pair


def test_force_charge_changes_the_battery_and_is_acked(node_agent, inverter):
    _agent, hub = node_agent
    command_id = hub.send(CommandType.FORCE_CHARGE, PowerParams(power_w=2000, duration_s=600))
    ack = hub.outcome(command_id)
    assert ack["state"] == "succeeded", ack
    assert [a["state"] for a in hub.acks[command_id]] == ["received", "succeeded"]
    assert "InWRte=40.0%" in ack["detail"]
    storage = inverter.read_model(124)
    assert storage["StorCtl_Mod"] == 1
    assert storage["InWRte"] == pytest.approx(40.0)
    assert storage["InOutWRte_RvrtTms"] == 600
    assert inverter.reading().battery_power_w == pytest.approx(-2000, abs=2)


def test_refused_commands_are_rejected_with_reasons_and_never_run(node_agent, inverter):
    _agent, hub = node_agent
    discharge = PowerParams(power_w=1000, duration_s=60)
    forged = hub.send(CommandType.DISCHARGE, discharge, secret=b"not-the-node-secret")
    expired = hub.send(CommandType.DISCHARGE, discharge, expires_in_s=-1)
    now = datetime.now(UTC)
    unknown = build_command(
        hub.node_id,
        SECRET,
        "u-1",
        CommandType.DISCHARGE,
        discharge,
        now,
        now + timedelta(minutes=1),
    )
    unknown["type"] = "SELF_DESTRUCT"
    hub.send(None, None, raw=unknown)
    bad_params = build_command(
        hub.node_id,
        SECRET,
        "b-1",
        CommandType.DISCHARGE,
        discharge,
        now,
        now + timedelta(minutes=1),
    )
    bad_params["params"] = {"power_w": -5, "duration_s": 60}
    # Re-signed: the params are what is wrong here, not the signature.
    bad_params["sig"] = sign(hub.node_id, bad_params, SECRET)
    hub.send(None, None, raw=bad_params)
    publish_json(hub.client, topics.commands(hub.node_id), "not an object")
    passive = hub.send(CommandType.SET_MODE, SetModeParams(mode="PASSIVE"), command_id="p-1")
    assert hub.outcome(passive)["state"] == "succeeded"
    replay = hub.send(CommandType.SET_MODE, SetModeParams(mode="AUTO"), command_id="p-1")

    reasons = {cid: hub.outcome(cid) for cid in (forged, expired, "u-1", "b-1", "unknown")}
    assert all(a["state"] == "rejected" for a in reasons.values()), reasons
    assert reasons[forged]["detail"] == "bad signature"
    assert reasons[expired]["detail"].startswith("expired")
    assert reasons["u-1"]["detail"] == "unknown command type 'SELF_DESTRUCT'"
    assert reasons["b-1"]["detail"].startswith("bad params: power_w")
    assert reasons["unknown"]["detail"] == "not a JSON object"
    # The same id's acks: the first command's received + succeeded, then the replay's.
    wait_for(lambda: len(hub.acks.get(replay, [])) == 3, 10, "the replay's ack")
    assert hub.acks[replay][2]["state"] == "rejected"
    assert hub.acks[replay][2]["detail"].startswith("replayed")
    # Only PASSIVE ran: hold (both bits), rates zero. No discharge, no AUTO.
    storage = inverter.read_model(124)
    assert storage["StorCtl_Mod"] == 3
    assert storage["OutWRte"] == 0


def test_hostile_input_quoted_in_a_rejection_still_makes_a_valid_ack(node_agent):
    _agent, hub = node_agent
    hub.send(None, None, raw={"id": "evil\x00id", "type": "X" * 5000})
    ack = hub.outcome("evil\ufffdid")
    assert ack["state"] == "rejected"
    assert ack["detail"].startswith("unknown command type 'XXX")
    assert len(ack["detail"]) == MAX_ACK_DETAIL_CHARS
    assert Ack.model_validate(ack).id == "evil\ufffdid"


def test_unreadable_commands_are_rejected_under_their_id_and_the_agent_goes_on(node_agent):
    """Bounds before and while parsing: a refusal for each, under the id the command
    starts with, and the command thread still runs the next one."""
    _agent, hub = node_agent
    head = '{"id": "%s", "type": "FORCE_CHARGE", "params": '
    payloads: dict[str, bytes] = {
        cid: (head % cid + rest).encode()
        for cid, rest in (
            ("deep-1", "[" * 30_000 + "]" * 30_000 + "}"),
            ("deep-2", "[" * 50_000 + "]" * 50_000 + "}"),
            ("digits-1", '{"power_w": ' + "9" * 5_000 + ', "duration_s": 60}}'),
            ("nan-1", '{"power_w": NaN, "duration_s": 60}}'),
        )
    }
    payloads["utf8-1"] = (head % "utf8-1").encode() + b'"\xff"}'
    payloads["unhashable-1"] = b'{"id": "unhashable-1", "type": ["FORCE_CHARGE"]}'
    publish_all(hub.client, [(topics.commands(hub.node_id), p) for p in payloads.values()])
    acks = {cid: hub.outcome(cid) for cid in payloads}
    assert all(a["state"] == "rejected" for a in acks.values()), acks
    details = {cid: a["detail"] for cid, a in acks.items()}
    assert details["deep-1"].startswith("invalid JSON: recursion limit exceeded")
    assert details["deep-2"] == f"{len(payloads['deep-2'])} bytes, more than {MAX_COMMAND_BYTES}"
    assert details["digits-1"].startswith("invalid JSON: number out of range")
    assert details["nan-1"].startswith("invalid JSON: expected value")
    assert details["utf8-1"].startswith("invalid JSON")
    assert details["unhashable-1"] == "unknown command type ['FORCE_CHARGE']"
    after = hub.send(CommandType.FETCH_LOGS, FetchLogsParams(lines=1))
    assert hub.outcome(after)["state"] == "succeeded"


def test_fetch_logs_sends_chunks(node_agent):
    _agent, hub = node_agent
    command_id = hub.send(CommandType.FETCH_LOGS, FetchLogsParams(lines=50))
    ack = hub.outcome(command_id)
    assert ack["state"] == "succeeded"
    wait_for(lambda: hub.logs, 10, "log chunks")
    chunk = LogChunk.model_validate_json(json.dumps(hub.logs[0]))
    assert (chunk.command_id, chunk.chunk, chunk.of) == (command_id, 0, 1)
    assert any("connected to" in line for line in chunk.lines)
    assert ack["detail"] == f"{len(chunk.lines)} lines in 1 chunks"


def _fetch_logs(tmp_path, lines: list[str], wanted: int) -> tuple[list[bytes], Ack]:
    """The chunks (as `Publisher.send` writes them) and final ack of a FETCH_LOGS run by
    a CommandHandler whose log holds `lines` (the inverter is never asked)."""
    ring = LogRing()
    ring.lines.extend(lines)
    sent: list[tuple[str, dict[str, Any]]] = []
    handler = CommandHandler(
        "logs-node",
        SECRET,
        None,  # type: ignore[arg-type]
        SeenCommands(tmp_path / "seen.sqlite3"),
        ring,
        lambda kind, body: sent.append((kind, body)),
        lambda: datetime.now(UTC),
        lambda: None,
        SafetyLock(tmp_path, False, lambda: datetime.now(UTC)),
    )
    now = datetime.now(UTC)
    command = build_command(
        "logs-node",
        SECRET,
        "fetch-1",
        CommandType.FETCH_LOGS,
        FetchLogsParams(lines=wanted),
        now,
        now + timedelta(minutes=1),
    )
    handler.handle(json.dumps(command).encode())
    chunks = [json.dumps(body).encode() for kind, body in sent if kind == "logs"]
    ack = Ack.model_validate([body for kind, body in sent if kind == "acks"][-1])
    return chunks, ack


def test_fetch_logs_chunks_stay_within_the_contract_bounds(tmp_path):
    """Long lines are cut, NUL and lone surrogates replaced, chunks split by lines and by
    bytes; every chunk is one the hub accepts."""
    hostile = ["x" * 5_000, "nul\x00here", "lone \ud800 surrogate", "\U0001f600" * 2_000]
    lines = [f"line {i}" for i in range(450)] + hostile
    chunks, ack = _fetch_logs(tmp_path, lines, len(lines))
    parsed = [LogChunk.model_validate_json(chunk) for chunk in chunks]
    assert all(len(chunk) <= MAX_LOG_CHUNK_BYTES for chunk in chunks)
    assert [(c.chunk, c.of) for c in parsed] == [(i, len(parsed)) for i in range(len(parsed))]
    assert all(len(c.lines) <= MAX_LOG_CHUNK_LINES for c in parsed)
    received = [line for c in parsed for line in c.lines]
    assert received[:450] == lines[:450]
    assert received[450:] == [
        "x" * MAX_LOG_LINE_CHARS,
        "nul\ufffdhere",
        "lone \ufffd surrogate",
        "\U0001f600" * MAX_LOG_LINE_CHARS,
    ]
    assert ack.state == "succeeded"
    assert ack.detail == f"{len(lines)} lines in {len(parsed)} chunks"


def test_fetch_logs_leaves_out_the_oldest_lines_beyond_the_chunk_bound(tmp_path):
    # A line of 1,000 emoji is 12,002 bytes escaped: 5 fit a chunk, 500 the 100 chunks.
    lines = ["\U0001f600" * MAX_LOG_LINE_CHARS] * 600
    chunks, ack = _fetch_logs(tmp_path, lines, 600)
    parsed = [LogChunk.model_validate_json(chunk) for chunk in chunks]
    sent = sum(len(c.lines) for c in parsed)
    assert len(parsed) == MAX_LOG_CHUNKS
    assert sent < 600
    assert (
        ack.detail == f"{sent} lines in {MAX_LOG_CHUNKS} chunks, the oldest {600 - sent} left out"
    )


def test_restart_agent_acks_then_exits_for_the_supervisor(node_agent):
    agent, hub = node_agent
    command_id = hub.send(CommandType.RESTART_AGENT, NoParams())
    assert hub.outcome(command_id)["state"] == "succeeded"
    assert agent.proc.wait(20) == 75


def _push(hub, agent, version, **changes):
    config = yaml.safe_load(agent.config.read_text())
    config.update(changes)
    return hub.send(CommandType.CONFIG_PUSH, ConfigPushParams(config=config, version=version))


@pytest.fixture
def supervised(broker, simulator, tmp_path) -> Iterator[tuple[AgentProcess, Hub]]:
    with agent_and_hub(
        broker, simulator, tmp_path, True, poll_interval_s=0.5, config_apply_deadline_s=4
    ) as pair:
        yield pair


def test_config_push_applies_after_a_restart_and_keeps_the_node_secrets(supervised):
    agent, hub = supervised
    original = agent.config.read_text()
    config = {**yaml.safe_load(original), "heartbeat_interval_s": 30.0}
    # The hub never sends secrets: the node keeps its own.
    secrets = {key: config.pop(key) for key in ("node_secret", "mqtt_password")}
    command_id = hub.send(CommandType.CONFIG_PUSH, ConfigPushParams(config=config, version=2))
    ack = hub.outcome(command_id, timeout=30)
    assert ack == {**ack, "state": "succeeded", "detail": "config version 2 applied"}
    assert agent.restarts == 1
    applied = yaml.safe_load(agent.config.read_text())
    assert applied == {**config, **secrets}
    assert agent.config.with_name("config.yaml.bak").read_text() == original


def test_config_push_that_loses_the_inverter_rolls_back_by_itself(supervised):
    agent, hub = supervised
    original = yaml.safe_load(agent.config.read_text())
    command_id = _push(hub, agent, 3, modbus_port=1)  # nothing listens there
    ack = hub.outcome(command_id, timeout=60)
    assert ack["state"] == "failed"
    assert ack["detail"] == "rolled back: inverter unreachable with config version 3"
    assert agent.restarts == 2  # into the new config, and back
    assert yaml.safe_load(agent.config.read_text()) == original


def test_invalid_config_push_fails_without_a_restart(supervised):
    agent, hub = supervised
    wrong_node = _push(hub, agent, 4, node_id="someone-else")
    invalid = _push(hub, agent, 5, poll_interval_s=-1)
    assert hub.outcome(wrong_node)["detail"] == "node_id must stay " + repr(hub.node_id)
    assert hub.outcome(invalid)["detail"].startswith("invalid config: poll_interval_s")
    assert agent.restarts == 0


def test_commands_queued_behind_a_restart_run_after_it(supervised):
    """Each command is acknowledged to the broker only once handled: one still queued
    when the agent restarts stays in its persistent session and reaches the next run."""
    agent, hub = supervised
    restart = hub.send(CommandType.RESTART_AGENT, NoParams())
    charge = hub.send(CommandType.FORCE_CHARGE, PowerParams(power_w=2000, duration_s=600))
    assert hub.outcome(charge, timeout=30)["state"] == "succeeded"
    assert agent.restarts == 1
    log = agent.log_path.read_text()
    # From the second run's CONNECT on: its session's queued commands may arrive before
    # its subscriptions are confirmed (and "connected to" logged).
    second_run = log.index("Sending CONNECT", log.index(f"command {restart} succeeded"))
    assert log.index(f"command {charge} received") > second_run
    # The restart itself was acknowledged before the exit: not run (or refused) again.
    assert [a["state"] for a in hub.acks[restart]] == ["received", "succeeded"]


def test_config_push_that_loses_the_broker_rolls_back_by_itself(supervised):
    agent, hub = supervised
    original = yaml.safe_load(agent.config.read_text())
    command_id = _push(hub, agent, 6, mqtt_port=1)  # nothing listens there
    ack = hub.outcome(command_id, timeout=60)
    assert ack["state"] == "failed"
    assert ack["detail"] == "rolled back: broker unreachable with config version 6"
    assert agent.restarts == 2
    assert yaml.safe_load(agent.config.read_text()) == original


def test_config_push_that_moves_the_buffer_is_still_followed(supervised, tmp_path):
    """The pending push is kept beside the config file, not the buffer: a config that
    moves the buffer (and cannot reach the inverter) is still rolled back."""
    agent, hub = supervised
    original = yaml.safe_load(agent.config.read_text())
    moved = tmp_path / "moved" / "buffer.sqlite3"
    command_id = _push(hub, agent, 7, buffer_path=str(moved), modbus_port=1)
    ack = hub.outcome(command_id, timeout=60)
    assert ack == {**ack, "state": "failed"}
    assert ack["detail"] == "rolled back: inverter unreachable with config version 7"
    assert agent.restarts == 2
    assert moved.exists()  # the new config did run
    assert yaml.safe_load(agent.config.read_text()) == original
    assert not (tmp_path / MARKER_NAME).exists()
    assert not (moved.parent / MARKER_NAME).exists()


def test_config_push_the_agent_cannot_start_with_rolls_back_at_once(supervised):
    agent, hub = supervised
    original = yaml.safe_load(agent.config.read_text())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        command_id = _push(hub, agent, 8, status_port=taken.getsockname()[1])
        ack = hub.outcome(command_id, timeout=60)
    assert ack["state"] == "failed"
    assert ack["detail"].startswith("rolled back: the agent failed to start (")
    assert ack["detail"].endswith(") with config version 8")
    assert agent.restarts == 2
    assert yaml.safe_load(agent.config.read_text()) == original


def test_config_file_damaged_during_a_push_rolls_back(broker, simulator, tmp_path):
    """A config the restarted agent cannot even parse (here: damaged after staging) is
    rolled back before anything else runs; the previous config reports the failure."""
    node = Node(unique("node"), 0, "node-password")
    with dynsec(broker) as admin:
        admin.add_node(node.id, node.password)
    agent = AgentProcess(
        tmp_path, broker, node, simulator, SIMULATOR_UNIT, node_secret=SECRET.decode()
    )
    original = agent.config.read_text()
    deadline = datetime.now(UTC) + timedelta(seconds=60)
    ConfigPush(agent.config, tmp_path).stage(
        "push-9", 9, yaml.safe_load(original), node.id, deadline
    )
    agent.config.write_text("poll_interval_s: [1, 2\n")  # not YAML any more
    hub = Hub(broker, node.id)
    agent.supervise()
    try:
        ack = hub.outcome("push-9", timeout=30)
        assert ack["state"] == "failed"
        assert ack["detail"].startswith("rolled back: the agent could not load its config (")
        assert ack["detail"].endswith(" with config version 9")
        assert agent.restarts == 1
        assert agent.config.read_text() == original
    finally:
        agent.stop_supervising()
        agent.release()


def test_a_marker_left_beside_the_buffer_by_an_older_agent_is_adopted(tmp_path):
    state_dir, buffer_dir = tmp_path / "state", tmp_path / "buffer"
    state_dir.mkdir()
    buffer_dir.mkdir()
    (buffer_dir / MARKER_NAME).write_text('{"id": "old"}')
    adopt_legacy_marker(state_dir / MARKER_NAME, buffer_dir)
    assert (state_dir / MARKER_NAME).read_text() == '{"id": "old"}'
    assert not (buffer_dir / MARKER_NAME).exists()
    # One already in the state dir is the newer: left alone.
    (buffer_dir / MARKER_NAME).write_text('{"id": "older"}')
    adopt_legacy_marker(state_dir / MARKER_NAME, buffer_dir)
    assert (state_dir / MARKER_NAME).read_text() == '{"id": "old"}'
