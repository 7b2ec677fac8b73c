"""The collector's intake process: MQTT intake, a bounded queue, and the hand-off of
batches to the batch writer process (`writer_process.py`), which decodes and commits.

Delivery: a message is acknowledged to the broker (manual PUBACK) only after the batch
holding it is committed (`committer.py`: stored or dead-lettered, each message; the
database being down holds the batch back, a message that kills the writer does not),
and after the batch's confirmations to the nodes are queued (`confirmations.py`):
commit, confirm, acknowledge.
The queue is bounded by flow control: the collector asks the broker for at most
`queue_max_messages` unacknowledged messages at a time (MQTT 5 receive maximum;
Mosquitto's own `max_inflight_messages` may be lower), so the broker keeps the rest
queued and the network thread does not wait. Only copies of messages from connections
lost while the database was down can overfill it; then intake blocks until a batch
commits (named decision: block, never drop).

Connecting, subscribing and acknowledging go through the MQTT link (contract/mqtt.py):
every message remembers its connection generation, and an ack for a message from an
older connection is dropped, because the broker delivers that message again (with the
persistent session) and the copy is acknowledged instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from apscheduler.schedulers.background import BackgroundScheduler
from paho.mqtt.client import MQTTMessage
from prometheus_client import CollectorRegistry, disable_created_metrics, start_http_server

from collector.backlog import Backlog
from collector.committer import Committer
from collector.config import CollectorSettings
from collector.confirmations import Confirmer
from collector.metrics import CollectorMetrics
from collector.watchdog import Watchdog
from collector.writer_process import RawMessage, WriterProcess, tune_gc
from contract import topics
from contract.mqtt import MAX_RECEIVE_MAXIMUM, MqttLink

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Received:
    """A message waiting for its batch to commit, then for its acknowledgement: what the
    writer process gets of it (`raw`) and what acknowledging it takes."""

    mid: int
    qos: int
    generation: int
    raw: RawMessage


class Collector:
    def __init__(self, settings: CollectorSettings, metrics: CollectorMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.backlog: Backlog[Received] = Backlog(
            settings.queue_max_messages, settings.batch_max_messages
        )
        # Committed batches waiting for their acknowledgements (see `_ack_committed`).
        self._committed: deque[list[Received]] = deque()
        self._accepting = True
        self._stopping = threading.Event()
        self._writer_process = WriterProcess(settings)
        self._committer = Committer(
            self._writer_process, metrics, settings.db_retry_max_s, self._stopping
        )
        kinds = ("telemetry", "status", "inventory")
        if settings.shared_subscription:
            filters = [topics.shared_subscription(kind) for kind in kinds]
        else:
            filters = [topics.all_nodes(kind) for kind in kinds]
        self.link = MqttLink(
            settings,
            [(topic_filter, 1) for topic_filter in filters],
            self._on_message,
            on_connection=self._connection_changed,
            receive_maximum=min(settings.queue_max_messages, MAX_RECEIVE_MAXIMUM),
        )
        self._confirmer = Confirmer(self.link, metrics)
        self._dispatcher = threading.Thread(target=self._dispatch_loop, name="dispatcher")

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._writer_process.start()
        self.link.start()
        self._dispatcher.start()

    def stop(self) -> None:
        """Stops intake, commits and acknowledges everything queued, then disconnects.

        Messages that arrive after intake stops are left unacknowledged in the broker
        session and delivered again when this collector (same client id) returns.
        """
        self._accepting = False
        self._stopping.set()
        self.backlog.close()
        self._dispatcher.join()
        self._ack_committed()
        self.link.stop()
        self._writer_process.stop()

    # -- MQTT callbacks (paho's network thread) -----------------------------------------

    def _connection_changed(self, up: bool) -> None:
        self.metrics.broker_connected.set(int(up))

    def _on_message(self, msg: MQTTMessage) -> None:
        if not self._accepting:
            return
        if self._committed:
            self._ack_committed()
        topic = msg.topic
        self.metrics.messages_received_total.count(topic.rpartition("/")[2])
        item = Received(
            msg.mid, msg.qos, self.link.generation, (topic, bytes(msg.payload), time.time())
        )
        if self.backlog.full():
            self.metrics.queue_full_total.inc()
        # Full only with copies from lost connections (see the module docstring): then
        # this thread waits for a commit, and the broker queues.
        self.backlog.put(item, self._still_accepting)

    def _still_accepting(self) -> bool:
        return self._accepting

    # -- dispatcher thread ----------------------------------------------------------------

    def _dispatch_loop(self) -> None:
        while (
            batch := self.backlog.take(self.settings.batch_max_seconds, self._ack_committed)
        ) is not None:
            confirmed = self._committer.commit([item.raw for item in batch])
            if confirmed is None:
                log.error(
                    "stopping with %d uncommitted messages left to the broker",
                    len(batch) + len(self.backlog),
                )
                return
            # Only what is committed, and queued before the acks: a crash before them
            # leaves the messages unacknowledged, redelivered and confirmed again.
            # (Past paho's in-flight window some may leave after the acks; a crash
            # then loses them, and the node resends those samples, confirmed then.)
            self._confirmer.publish(confirmed)
            self._committed.append(batch)
            self.metrics.queue_depth.set(len(self.backlog))

    def _ack_committed(self) -> None:
        """Acknowledges the committed batches. The network thread does it as it takes the
        next message; the dispatcher only when no message is coming (an idle backlog),
        or at stop. Each paho ack wakes the network loop through a socket pair,
        releasing the GIL: from another thread, 5,000 acks a batch meant as many thread
        switches. The link drains the batches under its ack lock, one thread at a time
        and in order, dropping acks for messages from an earlier connection."""
        self.link.ack_all(self._drain_committed())

    def _drain_committed(self) -> Iterator[Received]:
        while self._committed:
            yield from self._committed.popleft()


def run(settings: CollectorSettings, stop: threading.Event) -> None:
    """Runs a collector until `stop` is set, then drains, acknowledges and exits."""
    tune_gc()
    # Each counter's *_created series doubles what every scrape formats and sends.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()
    metrics = CollectorMetrics(registry)
    server, _ = start_http_server(settings.metrics_port, settings.metrics_host, registry)
    collector = Collector(settings, metrics)
    collector.start()
    scheduler = BackgroundScheduler(timezone="UTC")
    scheduler.add_job(
        Watchdog(settings, metrics).run,
        "interval",
        seconds=settings.watchdog_interval_s,
        max_instances=1,
        coalesce=True,
    )
    scheduler.start()
    log.info(
        "collector %s started; metrics on %s:%s",
        settings.mqtt_client_id,
        settings.metrics_host,
        settings.metrics_port,
    )
    try:
        stop.wait()
    finally:
        scheduler.shutdown(wait=True)
        collector.stop()
        server.shutdown()
        log.info("collector stopped")
