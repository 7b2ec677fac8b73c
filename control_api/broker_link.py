"""The API's one MQTT connection: publishes signed commands, receives node acks, and
carries dynamic-security requests (node accounts) to the broker.

Acks arrive on a persistent session under a stable client id, so those sent while the
API is down wait at the broker. Each is acknowledged to the broker (manual PUBACK) only
after its state change is committed; the handler is idempotent, so a redelivery after a
crash or a lost connection changes nothing twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags, MQTTMessage
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from contract import topics
from contract.mqtt import make_client, start_persistent
from contract.settings import MqttSettings
from control_api.broker_security import RESPONSE_TOPIC, DynsecClient

log = logging.getLogger(__name__)

ACK_FILTER = topics.all_nodes("acks")
# Called with (node_id, payload); raises when the ack could not be stored (it is then
# retried, never acknowledged to the broker unstored).
AckHandler = Callable[[str, bytes], None]


class BrokerUnavailableError(Exception):
    """The broker did not take a message or a request in time."""


class BrokerLink:
    def __init__(
        self, settings: MqttSettings, on_ack: AckHandler, publish_timeout_s: float = 5.0
    ) -> None:
        self._settings = settings
        self._on_ack = on_ack
        self._publish_timeout_s = publish_timeout_s
        self._stopping = threading.Event()
        self.connected = threading.Event()
        self.client = make_client(settings, settings.mqtt_client_id, manual_ack=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.dynsec = DynsecClient(self.client, subscribe=False)

    def start(self) -> None:
        start_persistent(self.client, self._settings)

    def stop(self) -> None:
        self._stopping.set()
        self.client.disconnect()
        self.client.loop_stop()

    def publish_command(self, node_id: str, payload: str) -> bool:
        """Publishes QoS 1 on the node's command topic; True once the broker has it
        (PUBACK), False when it did not confirm in time (the caller retries later)."""
        info = self.client.publish(topics.commands(node_id), payload, qos=1)
        try:
            info.wait_for_publish(self._publish_timeout_s)
        except (RuntimeError, ValueError):
            return False
        return info.is_published()

    def _on_connect(
        self,
        client: Client,
        _userdata: object,
        _flags: ConnectFlags,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.error("broker refused the control API: %s", reason)
            return
        # QoS 0 for dynamic-security answers: nobody waits for one across a reconnect,
        # and a QoS 1 message would need a manual ack of its own.
        client.subscribe([(ACK_FILTER, 1), (RESPONSE_TOPIC, 0)])
        self.connected.set()
        log.info("connected to the broker")

    def _on_disconnect(
        self,
        _client: Client,
        _userdata: object,
        _flags: DisconnectFlags,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        self.connected.clear()
        if not self._stopping.is_set():
            log.warning("lost the broker: %s", reason)

    def _on_message(self, client: Client, _userdata: object, msg: MQTTMessage) -> None:
        parsed = topics.parse_node_topic(msg.topic)
        if parsed is None or parsed[1] != "acks":
            client.ack(msg.mid, msg.qos)
            return
        delay = 0.5
        # Blocking here stops reading from the broker, which keeps the rest queued.
        while not self._stopping.is_set():
            try:
                self._on_ack(parsed[0], bytes(msg.payload))
                break
            except Exception:  # the top of this thread: log, back off, retry the same ack
                log.exception("could not store an ack from %s; retrying in %.1fs", parsed[0], delay)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
        else:
            return
        client.ack(msg.mid, msg.qos)
