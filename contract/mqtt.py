"""The one MQTT link of every service: the collector, the control API and the edge agent.

An `MqttLink` owns a paho-mqtt v5 client built from `MqttSettings` (credentials, TLS)
and paho's network thread. What it guarantees:

- **Connecting** in the background: `start()` returns at once. Clean start is off and
  the session outlives the connection (`mqtt_session_expiry_s`), so the broker keeps
  the subscriptions and every unacknowledged QoS 1 message across disconnects and
  restarts of the same client id. A refused, failed or lost connection is tried again
  by paho's loop with capped doubling back-off (1 s, doubling, up to
  `mqtt_reconnect_max_s`), outside the connection.
- **Subscribing** to its filters again on every connect, so a session the broker lost is
  rebuilt; a filter the broker refuses is logged at ERROR.
- **`connected`** is set while a connection is up and its subscriptions are in place
  (the broker answered them), so a message published after it is set reaches us.
- **Log once**: a refused, failed or lost connection is logged once at ERROR, then at
  DEBUG until a connection succeeds, which is logged at INFO.
- **Manual acknowledgements**: the client never acknowledges a QoS 1 message by itself.
  The service calls `ack()` or `ack_all()` once a message is handled or durably queued;
  until then the broker keeps it and delivers it again after a reconnect. A packet id
  means something only on the connection the message came in on, so every message
  belongs to a connection generation (`generation` when it arrived), and an ack for an
  older generation is dropped: the broker delivers that message again and the copy is
  acknowledged instead. `will_redeliver()` says whether that copy is coming.
- **Flow control**: with `receive_maximum`, the broker sends at most that many
  unacknowledged QoS 1 messages at a time (MQTT 5) and holds the rest back: how a
  service stops reading without blocking the network thread (`contract/delivery_worker.py`).
- **Nothing here blocks paho's network thread.** Callbacks given to the link run on it
  and must not block either: no sleep, no retry loop, no database call. (The
  collector's intake waits only if copies from lost connections overfill its backlog:
  collector/service.py.)

paho's failures reach callers as `MqttError` (with paho's code) where they need one.
"""

from __future__ import annotations

import contextlib
import logging
import math
import ssl
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from paho.mqtt.client import (
    MQTT_LOG_ERR,
    Client,
    ConnectFlags,
    DisconnectFlags,
    MQTTMessage,
    MQTTMessageInfo,
)
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from contract.failure_log import FailureLog
from contract.settings import MqttSettings

log = logging.getLogger(__name__)


# The largest receive maximum MQTT 5 can say (a two-byte integer).
MAX_RECEIVE_MAXIMUM = 65_535
# How long `stop` waits for the broker to confirm the publishes made before it.
STOP_CONFIRM_S = 2.0


def _paho_log(_client: Client, _userdata: object, level: int, message: str) -> None:
    # paho's own messages go to DEBUG (a lost connection is said once, by the link),
    # except a callback that raised: a bug of ours, said every time.
    if level == MQTT_LOG_ERR and message.startswith("Caught exception"):
        log.error("%s", message)
    else:
        log.debug("%s", message)


class MqttError(Exception):
    """The broker did not take a message; `rc` is paho's error code, None for a timeout."""

    def __init__(self, message: str, rc: int | None = None) -> None:
        super().__init__(message if rc is None else f"{message} (rc={rc})")
        self.rc = rc


class Ackable(Protocol):
    """What acknowledging a received message takes (a `Delivery`, a queued message)."""

    @property
    def mid(self) -> int: ...

    @property
    def qos(self) -> int: ...

    @property
    def generation(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Delivery:
    """A received message and what acknowledging it takes."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int


class MqttLink:
    def __init__(
        self,
        settings: MqttSettings,
        subscriptions: Sequence[tuple[str, int]],
        on_message: Callable[[MQTTMessage], None] | None = None,
        *,
        receive_maximum: int | None = None,
        will: tuple[str, str] | None = None,
        on_connection: Callable[[bool], None] | None = None,
    ) -> None:
        """`subscriptions`: (filter, QoS) pairs, subscribed on every connect.

        `on_message` gets every message no callback added with
        `client.message_callback_add` (a `DeliveryWorker`, dynsec answers) takes; it
        runs on the network thread, and without it such a message is acknowledged at
        once. `will`: (topic, payload) the broker publishes retained at QoS 1 when the
        connection drops without a DISCONNECT. `on_connection(up)` runs on the network
        thread when `connected` is set and when a connection is lost.
        """
        self.settings = settings
        self.receive_maximum = receive_maximum
        self.connected = threading.Event()
        # Written on the network thread under _ack_lock, so no ack can slip between a
        # generation check and a reconnect; read anywhere.
        self.generation = 0
        self._session_started_at = 0  # generation of the last connect without a session
        self._session_resumed_at = 0  # generation of the last connect that resumed one
        self._ack_lock = threading.Lock()
        self._stopping = False
        # The newest QoS 1+ publish: the broker confirms in order, so once it is
        # confirmed, all before it are (see `stop`).
        self._last_publish: MQTTMessageInfo | None = None
        self._failures = FailureLog(log)
        self._subscriptions = [(f, SubscribeOptions(qos=qos)) for f, qos in subscriptions]
        self._subscribe_mid: int | None = None
        self._refused_filters: set[str] = set()
        self._connection_up = False  # CONNACK accepted, no disconnect since
        self._on_connection = on_connection
        self.client = self._make_client()
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        if on_message is None:
            self.client.on_message = self._ack_unclaimed
        else:
            self.client.on_message = lambda _client, _userdata, msg: on_message(msg)

    def _make_client(self) -> Client:
        s = self.settings
        client = Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.mqtt_client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
        )
        client.username_pw_set(s.mqtt_username, s.mqtt_password.get_secret_value())
        if s.mqtt_tls:
            context = ssl.create_default_context(cafile=s.mqtt_ca_file)
            if s.mqtt_cert_file:
                context.load_cert_chain(s.mqtt_cert_file, s.mqtt_key_file)
            client.tls_set_context(context)
        client.reconnect_delay_set(min_delay=1, max_delay=math.ceil(s.mqtt_reconnect_max_s))
        # A callback that raises is logged at ERROR and the network thread goes on;
        # re-raised, it would end the thread, and with it every reconnect and delivery
        # of this link.
        client.suppress_exceptions = True
        client.on_log = _paho_log
        return client

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Starts the network thread, which connects (and reconnects) in the background."""
        s = self.settings
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = s.mqtt_session_expiry_s
        if self.receive_maximum is not None:
            props.ReceiveMaximum = self.receive_maximum
        self.client.connect_async(
            s.mqtt_host,
            s.mqtt_port,
            keepalive=s.mqtt_keepalive_s,
            clean_start=False,
            properties=props,
        )
        self.client.loop_start()

    def stop(self) -> None:
        """Disconnects and stops the network thread. Acks given before this go out
        before the DISCONNECT; unacknowledged messages stay in the broker's session.

        First it waits (up to STOP_CONFIRM_S) for the broker to confirm what was
        published: a socket closed while the broker's confirmations are still arriving,
        unread, is reset instead of closed, and the broker then drops what it had not
        yet read of this client, acks included (so they would be redelivered)."""
        self._stopping = True
        last = self._last_publish
        if last is not None and self.connected.is_set():
            with contextlib.suppress(RuntimeError, ValueError):
                last.wait_for_publish(STOP_CONFIRM_S)
        self.client.disconnect()
        self.client.loop_stop()

    # -- publishing ------------------------------------------------------------------------

    def publish(
        self, topic: str, payload: str | bytes, *, qos: int = 1, retain: bool = False
    ) -> MQTTMessageInfo:
        """Queues a message without waiting; paho sends QoS 1 again after a reconnect
        until the broker confirms it (`on_publish`)."""
        info = self.client.publish(topic, payload, qos, retain)
        if qos > 0:
            self._last_publish = info
        return info

    def publish_and_wait(
        self,
        topic: str,
        payload: str | bytes,
        timeout_s: float,
        *,
        qos: int = 1,
        retain: bool = False,
    ) -> None:
        """Publishes and waits up to `timeout_s` for the broker's confirmation (PUBACK).
        Raises MqttError when not connected, when paho's queue is full, or when no
        confirmation came in time."""
        info = self.client.publish(topic, payload, qos, retain)
        try:
            info.wait_for_publish(timeout_s)
        except (RuntimeError, ValueError) as exc:
            raise MqttError(f"publish on {topic} failed", info.rc) from exc
        if not info.is_published():
            raise MqttError(f"the broker did not confirm {topic} within {timeout_s:g} s")

    # -- acknowledging -------------------------------------------------------------------

    def ack(self, message: Ackable) -> bool:
        """Acknowledges one QoS 1 message; False when dropped: QoS 0, or it arrived on an
        earlier connection (the broker delivers it again)."""
        with self._ack_lock:
            if message.qos == 0 or message.generation != self.generation:
                return False
            self.client.ack(message.mid, message.qos)
            return True

    def ack_all(self, messages: Iterable[Ackable]) -> None:
        """Acknowledges many messages under one lock, dropping those `ack()` would.

        `messages` is consumed while the lock is held: a generator draining a queue
        that several threads ack from is drained by one at a time, in order."""
        with self._ack_lock:
            generation = self.generation
            ack = self.client.ack
            for message in messages:
                if message.qos > 0 and message.generation == generation:
                    ack(message.mid, message.qos)

    def will_redeliver(self, message: Ackable) -> bool:
        """True when the broker will deliver this message again: it came in on an earlier
        connection of the session a later connect resumed, so it was never acknowledged
        there and the broker resends it (a lost session resends nothing)."""
        return self._session_started_at <= message.generation < self._session_resumed_at

    # -- paho's network thread -----------------------------------------------------------

    def _on_connect(
        self,
        client: Client,
        _userdata: object,
        flags: ConnectFlags,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        s = self.settings
        if reason.is_failure:
            self._failures.failed(
                "broker refused the connection: %s (%s:%s)", reason, s.mqtt_host, s.mqtt_port
            )
            return
        self._connection_up = True
        with self._ack_lock:
            self.generation += 1
            if flags.session_present:
                self._session_resumed_at = self.generation
            else:
                self._session_started_at = self.generation
        if self._subscriptions:
            _, self._subscribe_mid = client.subscribe(self._subscriptions)
        else:
            self._ready()

    def _on_connect_fail(self, _client: Client, _userdata: object) -> None:
        s = self.settings
        self._failures.failed(
            "cannot connect to the broker at %s:%s; retrying", s.mqtt_host, s.mqtt_port
        )

    def _on_disconnect(
        self,
        _client: Client,
        _userdata: object,
        _flags: DisconnectFlags,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        with self._ack_lock:
            self.generation += 1
        was_up, self._connection_up = self._connection_up, False
        self.connected.clear()
        if was_up and not self._stopping:
            self._failures.failed("disconnected from the broker (%s); reconnecting", reason)
        if self._on_connection is not None:
            self._on_connection(False)

    def _on_subscribe(
        self,
        _client: Client,
        _userdata: object,
        mid: int,
        reasons: list[ReasonCode],
        _props: Properties | None,
    ) -> None:
        if mid != self._subscribe_mid:
            return
        for (topic_filter, _options), reason in zip(self._subscriptions, reasons, strict=False):
            if reason.is_failure:
                # Refused again at every reconnect: said at ERROR once per filter.
                level = logging.DEBUG if topic_filter in self._refused_filters else logging.ERROR
                log.log(
                    level, "the broker refused the subscription to %s: %s", topic_filter, reason
                )
                self._refused_filters.add(topic_filter)
        self._ready()

    def _ready(self) -> None:
        s = self.settings
        self.connected.set()
        again = " again" if self._failures.recover() else ""
        log.info("connected to %s:%s as %s%s", s.mqtt_host, s.mqtt_port, s.mqtt_client_id, again)
        if self._on_connection is not None:
            self._on_connection(True)

    def _ack_unclaimed(self, _client: Client, _userdata: object, msg: MQTTMessage) -> None:
        # Nothing here wants it: acknowledged, or it would hold a broker slot for good.
        self.client.ack(msg.mid, msg.qos)
