"""The agent keeps a sample until the hub confirms it (`nodes/{id}/ingested`): a real
Mosquitto with the repo's dynamic-security config, the real simulator, the agent built
in-process with an injected monotonic clock (so timeouts and the replay pace need no
waiting), and a test client on the collector's account acting as the hub: it receives
what the node sends, in order, and publishes confirmations."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.client import MQTTMessage

from contract import topics
from contract.confirmations import MAX_RANGES
from edge.agent import Agent
from edge.config import EdgeSettings
from tests.conftest import SIMULATOR_UNIT
from tests.support.fleet import (
    Node,
    dynsec,
    mqtt_client,
    publish_all,
    unique,
)
from tests.support.proxy import CuttableProxy
from tests.support.services import Broker, free_port, wait_for

pytestmark = pytest.mark.integration


class Clock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Hub:
    """The collector's side, played by the test: every telemetry message of the node
    (as its list of seqs) and every status it sent, in the order they arrived."""

    def __init__(self, broker: Broker, node_id: str) -> None:
        self.node_id = node_id
        self.messages: list[list[int]] = []
        self.statuses: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt_client(broker, "collector", broker.passwords["collector"])
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.subscribe([(topics.all_nodes("telemetry"), 1), (topics.all_nodes("status"), 1)])
        assert subscribed.wait(10)

    def _on_message(self, _client: object, _userdata: object, msg: MQTTMessage) -> None:
        body = json.loads(msg.payload)
        with self._lock:
            if msg.topic == topics.status(self.node_id):
                self.statuses.append(body)
            elif msg.topic == topics.telemetry(self.node_id):
                samples = body.get("samples", [body])
                self.messages.append([s["seq"] for s in samples])

    def confirm(self, *payloads: bytes) -> None:
        publish_all(self.client, [(topics.ingested(self.node_id), p) for p in payloads])

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def ranges(*seq_ranges: tuple[int, int]) -> bytes:
    return json.dumps({"seqs": [list(r) for r in seq_ranges]}).encode()


@pytest.fixture
def node(broker: Broker) -> Node:
    node = Node(unique("node"), 0, "node-password")
    with dynsec(broker) as admin:
        admin.add_node(node.id, node.password)
    return node


@pytest.fixture
def hub(broker: Broker, node: Node) -> Iterator[Hub]:
    hub = Hub(broker, node.id)
    try:
        yield hub
    finally:
        hub.close()


@pytest.fixture
def make_agent(tmp_path: Path, broker: Broker, node: Node, simulator: int):
    """Builds agents on one buffer file; each is connected by `connect()`, not run: the
    test calls the loop's steps."""
    built: list[Agent] = []

    def make(clock: Clock, wall: Any = None, **overrides: Any) -> Agent:
        settings = EdgeSettings(
            **{
                "node_id": node.id,
                "node_secret": "test-secret",
                "mqtt_host": "127.0.0.1",
                "mqtt_port": broker.port,
                "mqtt_password": node.password,
                "mqtt_tls": False,
                "modbus_port": simulator,
                "modbus_unit_id": SIMULATOR_UNIT,
                "buffer_path": tmp_path / "buffer.sqlite3",
                "status_host": "127.0.0.1",
                "status_port": free_port(),
                **overrides,
            }
        )
        agent = Agent(settings, monotonic=clock, **({"clock": wall} if wall else {}))
        built.append(agent)
        return agent

    yield make
    for agent in built:
        stop(agent)


def connect(agent: Agent) -> Agent:
    agent.publisher.start()
    wait_for(agent.publisher.connected.is_set, 15, "the agent connected")
    return agent


def stop(agent: Agent) -> None:
    if agent.publisher.link.client.is_connected() or agent.publisher.connected.is_set():
        agent.publisher.stop()
    agent.status_server.server.server_close()
    agent.buffer.close()


def sync(agent: Agent, hub: Hub) -> None:
    """Returns once the hub received everything the agent sent so far: a heartbeat sent
    now arrives after it (one connection, delivered in order), and the broker's PUBACKs
    for all of it are applied."""
    before = len(hub.statuses)
    agent.heartbeat()
    wait_for(lambda: len(hub.statuses) > before, 15, "the heartbeat at the hub")
    agent.publisher.link.publish_and_wait(topics.logs(agent.settings.node_id), "{}", 15)
    agent.publisher.pump()


def pump(agent: Agent, clock: Clock, times: int = 20) -> None:
    """The agent loop's pumping, 10 ms of monotonic time apart."""
    for _ in range(times):
        clock.now += 0.01
        agent.publisher.pump()


def confirmed(agent: Agent, hub: Hub, payload: bytes, depth: int) -> None:
    hub.confirm(payload)
    wait_for(
        lambda: agent.publisher.pump() is not None and agent.buffer.depth() == depth,
        15,
        f"buffer depth {depth} after the confirmation",
    )


def buffered(agent: Agent) -> list[int]:
    return [seq for seq, _ in agent.buffer.pending(1_000_000)[0]]


def metric(agent: Agent, name: str) -> float:
    return agent.metrics.registry.get_sample_value(name) or 0.0


def test_a_puback_deletes_nothing_and_confirmed_ranges_are_deleted(make_agent, hub):
    clock = Clock()
    agent = connect(make_agent(clock))
    for _ in range(5):
        agent.poll()
    sync(agent, hub)
    assert hub.messages == [[0], [1], [2], [3], [4]]
    assert buffered(agent) == [0, 1, 2, 3, 4]  # every PUBACK is in, nothing went

    confirmed(agent, hub, ranges((0, 1), (3, 3)), depth=2)
    assert buffered(agent) == [2, 4]
    # Seqs the buffer no longer (or never) held are no-ops beside the ones it does.
    confirmed(agent, hub, ranges((0, 2), (4, 4), (50, 60)), depth=0)
    sync(agent, hub)
    assert hub.messages == [[0], [1], [2], [3], [4]]  # nothing sent twice
    assert metric(agent, "wattfleet_edge_resent_samples_total") == 0


MALFORMED = [
    b"not json",
    b"",
    b"{}",
    b"[[0, 2]]",
    b'{"seqs": []}',
    b'{"seqs": "0-2"}',
    b'{"seqs": [[2, 1]]}',
    b'{"seqs": [[-1, 1]]}',
    b'{"seqs": [["0", "2"]]}',
    b'{"seqs": [[0, 1.5]]}',
    b'{"seqs": [[0, 1, 2]]}',
    b'{"seqs": [[0, 9223372036854775808]]}',
    json.dumps({"seqs": [[2 * i, 2 * i] for i in range(MAX_RANGES + 1)]}).encode(),
]


def test_malformed_confirmations_change_nothing_and_the_agent_keeps_working(
    make_agent, hub, caplog
):
    caplog.set_level(logging.DEBUG, logger="edge.publisher")
    clock = Clock()
    agent = connect(make_agent(clock))
    for _ in range(3):
        agent.poll()
    sync(agent, hub)

    hub.confirm(*MALFORMED)
    wait_for(
        lambda: (
            agent.publisher.pump() is not None
            and metric(agent, "wattfleet_edge_malformed_confirmations_total") == len(MALFORMED)
        ),
        15,
        "every malformed confirmation counted",
    )
    assert buffered(agent) == [0, 1, 2]
    said = [r for r in caplog.records if "malformed confirmation" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.ERROR] + [logging.DEBUG] * (len(MALFORMED) - 1)

    agent.poll()  # still sampling and sending
    confirmed(agent, hub, ranges((0, 3)), depth=0)
    sync(agent, hub)
    assert hub.messages == [[0], [1], [2], [3]]
    assert any(r.getMessage() == "confirmations are well-formed again" for r in caplog.records)


def test_unconfirmed_samples_are_sent_again_in_batches_after_the_timeout_with_back_off(
    make_agent, hub
):
    clock = Clock()
    agent = connect(
        make_agent(clock, confirm_timeout_s=60, replay_batch_samples=2, replay_batches_in_flight=4)
    )
    for _ in range(3):
        agent.poll()
    sync(agent, hub)
    assert hub.messages == [[0], [1], [2]]

    clock.now += 59.5
    pump(agent, clock)
    sync(agent, hub)
    assert hub.messages == [[0], [1], [2]]  # not yet
    clock.now += 0.5
    pump(agent, clock)
    sync(agent, hub)
    assert hub.messages[3:] == [[0, 1], [2]]  # again, in seq order, as replay batches
    assert metric(agent, "wattfleet_edge_resent_samples_total") == 3

    # No confirmation came: the next timeout is twice as long (120 s after the resend).
    clock.now += 119.5
    pump(agent, clock)
    sync(agent, hub)
    assert len(hub.messages) == 5
    clock.now += 0.5
    pump(agent, clock)
    sync(agent, hub)
    assert hub.messages[5:] == [[0, 1], [2]]

    # Any confirmation resets the back-off: 60 s again for what is left.
    confirmed(agent, hub, ranges((0, 0)), depth=2)
    clock.now += 59.5
    pump(agent, clock)
    sync(agent, hub)
    assert len(hub.messages) == 7
    clock.now += 0.5
    pump(agent, clock)
    sync(agent, hub)
    assert hub.messages[7:] == [[1, 2]]


def test_replay_keeps_to_its_window_and_rate_and_live_samples_go_at_once(
    make_agent, hub, simulator
):
    clock = Clock()
    agent = make_agent(
        clock, replay_batch_samples=5, replay_batches_in_flight=3, replay_max_samples_per_s=10
    )
    for _ in range(30):  # taken while offline: a backlog
        agent.poll()
    connect(agent)

    pump(agent, clock, times=1)
    for _ in range(5):  # the clock stands still: the pace allows no second batch
        agent.publisher.pump()
    sync(agent, hub)
    assert hub.messages == [[0, 1, 2, 3, 4]]
    clock.now += 0.49  # 5 samples at 10/s: the next batch half a second later
    agent.publisher.pump()
    sync(agent, hub)
    assert len(hub.messages) == 1
    pump(agent, clock, times=1)
    sync(agent, hub)
    assert hub.messages[1:] == [[5, 6, 7, 8, 9]]

    clock.now += 30  # time enough for many batches, but the window holds three
    pump(agent, clock)
    agent.poll()  # a live sample goes out at once all the same
    sync(agent, hub)
    assert hub.messages[2:] == [[10, 11, 12, 13, 14], [30]]

    confirmed(agent, hub, ranges((0, 9)), depth=21)  # two batches confirmed: two more
    pump(agent, clock, times=1)
    clock.now += 0.5
    pump(agent, clock, times=1)
    clock.now += 0.5
    pump(agent, clock)
    sync(agent, hub)
    assert hub.messages[4:] == [[15, 16, 17, 18, 19], [20, 21, 22, 23, 24]]


def test_a_restarted_agent_sends_everything_unconfirmed_again(make_agent, hub):
    clock = Clock()
    first = make_agent(clock, replay_batch_samples=5, replay_batches_in_flight=2)
    for _ in range(20):
        first.poll()
    connect(first)
    pump(first, clock)
    sync(first, hub)
    assert hub.messages == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    confirmed(first, hub, ranges((0, 4)), depth=15)
    pump(first, clock)
    sync(first, hub)
    assert hub.messages[2:] == [[10, 11, 12, 13, 14]]
    stop(first)  # mid-replay: 5..14 sent, unconfirmed

    again = connect(make_agent(clock, replay_batch_samples=5, replay_batches_in_flight=2))
    pump(again, clock)
    sync(again, hub)
    assert hub.messages[3:] == [[5, 6, 7, 8, 9], [10, 11, 12, 13, 14]]
    confirmed(again, hub, ranges((5, 14)), depth=5)
    pump(again, clock)
    sync(again, hub)
    assert hub.messages[5:] == [[15, 16, 17, 18, 19]]


def test_a_new_connection_sends_everything_unconfirmed_again(make_agent, hub, broker):
    proxy = CuttableProxy(broker.port)
    clock = Clock()
    try:
        agent = connect(
            make_agent(clock, mqtt_port=proxy.port, mqtt_keepalive_s=5, mqtt_reconnect_max_s=1)
        )
        for _ in range(3):
            agent.poll()
        sync(agent, hub)
        confirmed(agent, hub, ranges((0, 0)), depth=2)
        proxy.cut()
        wait_for(lambda: not agent.publisher.connected.is_set(), 15, "the connection lost")
        agent.poll()  # taken while away: only buffered
        proxy.restore()
        wait_for(agent.publisher.connected.is_set, 15, "connected again")
        pump(agent, clock)
        sync(agent, hub)
    finally:
        proxy.close()
    assert hub.messages == [[0], [1], [2], [1, 2, 3]]


def test_without_confirmations_a_puback_deletes(make_agent, hub):
    """`ingest_confirmations: false`, for hubs that predate confirmations."""
    clock = Clock()
    agent = make_agent(clock, ingest_confirmations=False, replay_batch_samples=4)
    for _ in range(6):
        agent.poll()
    connect(agent)
    pump(agent, clock)
    agent.poll()
    sync(agent, hub)
    assert hub.messages == [[0, 1, 2, 3], [4, 5], [6]]
    assert buffered(agent) == []


def test_the_heartbeat_and_status_page_carry_the_oldest_unconfirmed_age(make_agent, hub):
    taken = datetime(2026, 11, 30, 12, tzinfo=UTC)
    wall = [taken]
    clock = Clock()
    agent = connect(make_agent(clock, wall=lambda: wall[0]))
    agent.poll()
    wall[0] = taken + timedelta(seconds=30)
    agent.poll()
    wall[0] = taken + timedelta(seconds=90, milliseconds=500)
    sync(agent, hub)
    assert hub.statuses[-1]["buffer_depth"] == 2
    assert hub.statuses[-1]["oldest_unconfirmed_age_s"] == 90
    assert agent.snapshot()["oldest_unconfirmed_age_s"] == 90

    confirmed(agent, hub, ranges((0, 0)), depth=1)
    sync(agent, hub)
    assert hub.statuses[-1]["oldest_unconfirmed_age_s"] == 60

    confirmed(agent, hub, ranges((1, 1)), depth=0)
    sync(agent, hub)
    assert hub.statuses[-1]["buffer_depth"] == 0
    assert "oldest_unconfirmed_age_s" not in hub.statuses[-1]
    assert agent.snapshot()["oldest_unconfirmed_age_s"] is None
