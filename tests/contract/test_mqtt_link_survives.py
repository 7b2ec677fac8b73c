"""What the MQTT link survives without ending its network thread or flooding the log:
a callback that raises (the next message still arrives) and a subscription the broker
refuses at every reconnect (said at ERROR once). A real Mosquitto with the repo's
config."""

from __future__ import annotations

import logging

import pytest
from paho.mqtt.client import MQTTMessage

from contract import topics
from contract.mqtt import MqttLink
from tests.contract.test_mqtt_link import ACKS, api_account, reconnect
from tests.support.services import wait_for

pytestmark = pytest.mark.integration


def test_a_raising_callback_is_logged_and_the_next_message_still_arrives(broker, node, caplog):
    caplog.set_level(logging.ERROR, logger="contract.mqtt")
    received: list[bytes] = []
    link: MqttLink

    def on_message(msg: MQTTMessage) -> None:
        if msg.payload == b"boom":
            raise ValueError("a handler bug")
        received.append(bytes(msg.payload))
        link.client.ack(msg.mid, msg.qos)

    link = MqttLink(api_account(broker, broker.port), [(ACKS, 1)], on_message)
    link.start()
    try:
        wait_for(link.connected.is_set, 10, "connected")
        node.send("boom", "after")
        wait_for(lambda: received, 10, "the message after the raising one")
        assert link.connected.is_set()
    finally:
        link.stop()
    assert received == [b"after"]
    assert any("a handler bug" in r.getMessage() for r in caplog.records)


def test_a_refused_subscription_is_logged_once_across_reconnects(broker, proxy, caplog):
    caplog.set_level(logging.DEBUG, logger="contract.mqtt")
    forbidden = topics.all_nodes("telemetry")  # the collector's, not the API's
    link = MqttLink(api_account(broker, proxy.port), [(ACKS, 1), (forbidden, 1)])
    link.start()
    try:
        wait_for(link.connected.is_set, 10, "connected")
        reconnect(link, proxy)
    finally:
        link.stop()
    refusals = [r for r in caplog.records if "refused the subscription" in r.getMessage()]
    assert [r.levelno for r in refusals] == [logging.ERROR, logging.DEBUG]
    assert forbidden in refusals[0].getMessage()
