"""The MQTT link and its delivery worker against a real Mosquitto with the repo's config:
reconnecting, resubscribing, manual acks across connections, log-once, handling off the
network thread, and what happens to queued messages when the connection comes back."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from paho.mqtt.client import Client, MQTTMessage
from pydantic import SecretStr

from contract import topics
from contract.delivery_worker import DeliveryWorker, RetryLaterError
from contract.mqtt import Delivery, MqttLink
from contract.settings import MqttSettings
from tests.support.fleet import dynsec, mqtt_client, publish_all, unique
from tests.support.proxy import CuttableProxy
from tests.support.services import Broker, wait_for

pytestmark = pytest.mark.integration

ACKS = topics.all_nodes("acks")


class Node:
    """A node's own broker account, publishing on its acks topic."""

    def __init__(self, broker: Broker) -> None:
        self.id = unique("node")
        with dynsec(broker) as admin:
            admin.add_node(self.id, "node-password")
        self.client: Client = mqtt_client(broker, self.id, "node-password", client_id=self.id)

    def send(self, *payloads: str) -> None:
        publish_all(self.client, [(topics.acks(self.id), p) for p in payloads])


def api_account(broker: Broker, port: int, **overrides: Any) -> MqttSettings:
    """The control API's account (it may read every node's acks and publish commands)."""
    return MqttSettings(
        mqtt_port=port,
        mqtt_username="control-api",
        mqtt_password=SecretStr(broker.passwords["control-api"]),
        mqtt_client_id=unique("link"),
        mqtt_keepalive_s=5,
        mqtt_reconnect_max_s=1,
        **overrides,
    )


def reconnect(link: MqttLink, proxy: CuttableProxy, down_s: float = 0.0) -> None:
    """Drops the link's connection (for at least `down_s`) and waits until it is back."""
    generation = link.generation
    proxy.cut()
    wait_for(lambda: not link.connected.is_set(), 10, "the link to notice")
    if down_s:
        threading.Event().wait(down_s)  # the broker's session expiry needs real time
    proxy.restore()
    wait_for(lambda: link.connected.is_set() and link.generation > generation, 20, "reconnected")


def settle(link: MqttLink, worker: DeliveryWorker | None = None) -> None:
    """Waits until the worker has acknowledged everything it took in and the broker has
    read those acks: they were sent before a publish the broker confirms."""
    if worker is not None:
        wait_for(lambda: len(worker) == 0, 10, "the worker to finish")
    link.publish_and_wait(topics.BROADCAST, "", timeout_s=5)


def test_an_unacknowledged_message_comes_again_and_the_old_ack_is_dropped(broker, proxy, node):
    received: list[Delivery] = []
    link: MqttLink

    def on_message(msg: MQTTMessage) -> None:
        received.append(Delivery(msg.topic, bytes(msg.payload), msg.mid, msg.qos, link.generation))

    link = MqttLink(api_account(broker, proxy.port), [(ACKS, 1)], on_message)
    link.start()
    try:
        wait_for(link.connected.is_set, 10, "connected")
        node.send("one")
        first = wait_for(lambda: received[:1], 10, "the message")[0]
        reconnect(link, proxy)
        again = wait_for(lambda: received[1:2], 10, "the message again")[0]
        assert again.payload == b"one"
        assert link.will_redeliver(first)
        assert not link.ack(first)  # its packet id belonged to the old connection
        assert link.ack(again)
        settle(link)
        reconnect(link, proxy)
        node.send("two")
        wait_for(lambda: len(received) == 3, 10, "the next message")
    finally:
        link.stop()
    # Acknowledged once on the right connection: not delivered a third time.
    assert [d.payload for d in received] == [b"one", b"one", b"two"]


def test_a_lost_broker_is_logged_once_then_its_return(broker, proxy, caplog):
    caplog.set_level(logging.DEBUG, logger="contract.mqtt")
    link = MqttLink(api_account(broker, proxy.port), [(ACKS, 1)])
    link.start()
    try:
        wait_for(link.connected.is_set, 10, "connected")
        reconnect(link, proxy, down_s=3)  # a few failed attempts meanwhile
    finally:
        link.stop()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1, errors
    assert errors[0].startswith("disconnected from the broker (")
    connects = [r.getMessage() for r in caplog.records if r.getMessage().startswith("connected")]
    assert [c.endswith(" again") for c in connects] == [False, True], connects


class Handler:
    """Records what it handles; asks for a retry while `failing` is set, waits while
    `gate` is clear, and refuses `poison` for good."""

    def __init__(self) -> None:
        self.handled: list[bytes] = []
        self.attempts = 0
        self.failing = threading.Event()
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, _topic: str, payload: bytes) -> None:
        self.attempts += 1
        self.gate.wait()
        if self.failing.is_set():
            raise RetryLaterError("database unavailable")
        if payload == b"poison":
            raise ValueError("a value the database cannot hold")
        self.handled.append(payload)


@contextmanager
def running(link: MqttLink, worker: DeliveryWorker) -> Iterator[None]:
    worker.start()
    link.start()
    try:
        wait_for(link.connected.is_set, 10, "connected")
        yield
    finally:
        worker.stop()
        link.stop()


@contextmanager
def stuck_on_a(
    settings: MqttSettings, node: Node, receive_maximum: int
) -> Iterator[tuple[MqttLink, DeliveryWorker, Handler]]:
    """A link and worker whose handler holds message `a` (its gate closed), `b` queued."""
    handler = Handler()
    handler.gate.clear()
    link = MqttLink(settings, [(ACKS, 1)], receive_maximum=receive_maximum)
    worker = DeliveryWorker(link, ACKS, handler, name="acks")
    with running(link, worker):
        node.send("a", "b")
        wait_for(lambda: handler.attempts == 1 and len(worker) == 2, 10, "a in hand, b queued")
        yield link, worker, handler


def test_a_failing_handler_is_retried_off_the_network_thread_and_acked_after(
    broker, proxy, node, caplog
):
    caplog.set_level(logging.DEBUG, logger="contract.delivery_worker")
    handler = Handler()
    handler.failing.set()
    link = MqttLink(api_account(broker, proxy.port), [(ACKS, 1)], receive_maximum=10)
    worker = DeliveryWorker(link, ACKS, handler, name="acks", retry_max_s=0.5)
    with running(link, worker):
        node.send("first", "second")
        wait_for(lambda: handler.attempts >= 3, 10, "retries of the first message")
        # The network thread is free: a publish gets its confirmation meanwhile.
        link.publish_and_wait(topics.commands(node.id), "{}", timeout_s=5)
        assert handler.handled == []  # nothing overtakes the failing message
        assert worker.stuck
        handler.failing.clear()
        wait_for(lambda: handler.handled == [b"first", b"second"], 10, "both handled")
        settle(link, worker)
        reconnect(link, proxy)
        node.send("third")
        wait_for(lambda: len(handler.handled) == 3, 10, "the next message")
    # Both were acknowledged once handled: the reconnect brought neither back.
    assert handler.handled == [b"first", b"second", b"third"]
    assert not worker.stuck
    failures = [r for r in caplog.records if "failed; retrying" in r.getMessage()]
    assert [r.levelname for r in failures[:2]] == ["ERROR", "DEBUG"]


def test_a_message_the_handler_refuses_for_good_is_dropped_and_blocks_nothing(
    broker, proxy, node, caplog
):
    """Only RetryLaterError is retried: any other failure is a message that can never be
    handled, so it is counted, logged and acknowledged, not retried in front of the rest."""
    dropped: list[None] = []
    handler = Handler()
    link = MqttLink(api_account(broker, proxy.port), [(ACKS, 1)], receive_maximum=10)
    worker = DeliveryWorker(
        link, ACKS, handler, name="acks", on_dropped=lambda: dropped.append(None)
    )
    with running(link, worker):
        node.send("first", "poison", "second", "poison", "third")
        wait_for(lambda: len(handler.handled) == 3, 10, "the good messages")
        assert not worker.stuck
        settle(link, worker)
        reconnect(link, proxy)
        node.send("fourth")
        wait_for(lambda: len(handler.handled) == 4, 10, "the next message")
    # The poison was acknowledged: the reconnect did not bring it back.
    assert handler.handled == [b"first", b"second", b"third", b"fourth"]
    assert handler.attempts == 6
    assert (worker.dropped_total, len(dropped)) == (2, 2)
    drops = [r for r in caplog.records if "cannot be handled; dropped" in r.getMessage()]
    assert [r.levelname for r in drops] == ["ERROR", "ERROR"]  # a good one came between
    assert all(r.exc_info for r in drops)


def test_queued_messages_the_broker_sends_again_are_handled_once(broker, proxy, node):
    with stuck_on_a(api_account(broker, proxy.port), node, 10) as (link, worker, handler):
        reconnect(link, proxy)
        wait_for(lambda: len(worker) == 4, 10, "a and b delivered again")
        handler.gate.set()
        wait_for(lambda: len(handler.handled) == 3, 10, "handled")
        settle(link, worker)
        reconnect(link, proxy)
        node.send("c")
        wait_for(lambda: len(handler.handled) == 4, 10, "the next message")
    # `a` was in hand at the reconnect, so it ran twice (its first ack was dropped); the
    # old `b` was skipped for its copy; all acknowledged, none came a third time.
    assert handler.handled == [b"a", b"a", b"b", b"c"]


def test_a_lost_session_does_not_starve_the_new_connection(broker, proxy, node):
    """When the broker lost the session while the handler was stuck, the old messages
    are kept (their only copy) and the new ones still get in: none is left holding one
    of the broker's in-flight slots until some later reconnect."""
    settings = api_account(broker, proxy.port, mqtt_session_expiry_s=3)
    with stuck_on_a(settings, node, 2) as (link, worker, handler):
        reconnect(link, proxy, down_s=6)  # the session expires: subscribed afresh
        node.send("c", "d")
        wait_for(lambda: len(worker) == 4, 10, "c and d queued beside the old b")
        handler.gate.set()
        wait_for(lambda: len(handler.handled) == 4, 10, "a, b, c and d handled")
        assert worker.refused_total == 0
    assert handler.handled == [b"a", b"b", b"c", b"d"]
