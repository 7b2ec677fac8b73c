"""The API's one MQTT connection: publishes signed commands, receives node acks, the
log chunks nodes send for FETCH_LOGS and the configs they report, and carries
dynamic-security requests (node accounts) to the broker.

Acks arrive on a persistent session under a stable client id, so those sent while the
API is down wait at the broker. Each is handled on the ack worker's thread, never on
paho's network thread (contract/delivery_worker.py), and acknowledged to the broker
(manual PUBACK) only after its state change is committed. A write the database could
not take now (RetryLaterError: it is unavailable) is retried there with capped back-off
while the network thread keeps publishing commands and answering dynamic-security
requests, and `acks_stuck` says so; an ack the handler fails on in any other way can
never be stored, so it is dropped (logged, counted by `on_ack_dropped`) and blocks
nothing behind it. The handler is idempotent, so a redelivery after a crash or a lost
connection changes nothing twice.

Log chunks (`nodes/+/logs`) are handled the same way on a worker of their own, so a
stored log chunk and an applied ack never wait for each other's handler, and a chunk is
acknowledged only once stored or dropped. Reported configs (`nodes/+/config`, retained,
so the API receives each node's latest again whenever it subscribes) likewise.

Full queue (named decision: stop reading): at most ACK_QUEUE_CAPACITY messages are
unacknowledged at a time; the broker holds back the rest (and keeps them in the session)
until the workers catch up.

At every connect (the first after the API starts, and after the broker restarts), the
broker's roles and node accounts are brought up to what `broker_security.py` defines
(`DynsecClient.reconcile`): installations made by an earlier version get the ACLs they
lack. It runs on a thread of its own, since the network thread carries its answers; a
broker that is down delays it to the connect, and one that fails it is logged and
tried again at the next connect. The API starts and serves meanwhile.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from contract import topics
from contract.delivery_worker import DeliveryWorker
from contract.mqtt import MqttError, MqttLink
from contract.settings import MqttSettings
from control_api.broker_security import RESPONSE_TOPIC, BrokerSecurityError, DynsecClient

log = logging.getLogger(__name__)

ACK_FILTER = topics.all_nodes("acks")
LOG_FILTER = topics.all_nodes("logs")
CONFIG_FILTER = topics.all_nodes("config")
ACK_QUEUE_CAPACITY = 1_000
ACK_RETRY_MAX_S = 30.0
# Called with (node_id, payload) on the ack worker's thread; drops a malformed ack itself
# and raises RetryLaterError when the ack could not be stored yet (it is then retried,
# never acknowledged to the broker unstored).
# Likewise for a log chunk from `nodes/{node_id}/logs`, and a config report from
# `nodes/{node_id}/config`: each kind has a worker thread of its own.
NodeMessageHandler = Callable[[str, bytes], None]
Dropped = Callable[[], None]


class BrokerLink:
    def __init__(
        self,
        settings: MqttSettings,
        on_ack: NodeMessageHandler,
        publish_timeout_s: float = 5.0,
        on_ack_dropped: Callable[[], None] = lambda: None,
        *,
        on_logs: NodeMessageHandler,
        on_logs_dropped: Callable[[], None],
        on_config: NodeMessageHandler,
        on_config_dropped: Callable[[], None],
    ) -> None:
        self._publish_timeout_s = publish_timeout_s
        # QoS 0 for dynamic-security answers: nobody waits for one across a reconnect,
        # and a QoS 1 message would need an ack of its own.
        self.link = MqttLink(
            settings,
            [(ACK_FILTER, 1), (LOG_FILTER, 1), (CONFIG_FILTER, 1), (RESPONSE_TOPIC, 0)],
            receive_maximum=ACK_QUEUE_CAPACITY,
            on_connection=self._connection_changed,
        )
        self.connected = self.link.connected

        def worker(
            topic_filter: str, handle: NodeMessageHandler, dropped: Dropped
        ) -> DeliveryWorker:
            return DeliveryWorker(
                self.link,
                topic_filter,
                _from_node(handle),
                name=topic_filter.rsplit("/", 1)[-1],
                retry_max_s=ACK_RETRY_MAX_S,
                on_dropped=dropped,
            )

        self._acks = worker(ACK_FILTER, on_ack, on_ack_dropped)
        self._workers = (
            self._acks,
            worker(LOG_FILTER, on_logs, on_logs_dropped),
            worker(CONFIG_FILTER, on_config, on_config_dropped),
        )
        self.dynsec = DynsecClient(self.link.client, subscribe=False)

    @property
    def acks_stuck(self) -> bool:
        """True while an ack waits to be stored again (and every ack behind it waits)."""
        return self._acks.stuck

    def start(self) -> None:
        for worker in self._workers:
            worker.start()
        self.link.start()

    def stop(self) -> None:
        for worker in self._workers:
            worker.stop()
        self.link.stop()

    def publish_command(self, node_id: str, payload: str) -> bool:
        """Publishes QoS 1 on the node's command topic; True once the broker has it
        (PUBACK), False when it did not confirm in time (the caller retries later)."""
        try:
            self.link.publish_and_wait(topics.commands(node_id), payload, self._publish_timeout_s)
        except MqttError:
            return False
        return True

    def _connection_changed(self, up: bool) -> None:
        if up:
            threading.Thread(target=self._reconcile, name="broker-reconcile", daemon=True).start()

    def _reconcile(self) -> None:
        # Not serialized: a run cut off by a lost connection (changing the API's own role
        # drops it) may still wait for its answers when the reconnect starts the next, and
        # two runs only ever add the same ACLs (reconcile is idempotent).
        try:
            changes = self.dynsec.reconcile()
        except BrokerSecurityError as exc:
            log.error("broker roles not brought up to date (tried again at reconnect): %s", exc)
        else:
            if changes:
                log.info("broker roles and node accounts brought up to date: %d changes", changes)


def _from_node(handle: Callable[[str, bytes], None]) -> Callable[[str, bytes], None]:
    """A worker's handler: calls `handle(node_id, payload)` with the node the topic names
    (the broker lets a node publish only on its own topics)."""

    def from_topic(topic: str, payload: bytes) -> None:
        parsed = topics.parse_node_topic(topic)
        if parsed is None:
            return  # no valid node id in the topic: not a node's message, dropped
        handle(parsed[0], payload)

    return from_topic
