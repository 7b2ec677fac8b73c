"""The collector process: MQTT intake, a bounded queue, and one batch writer.

Delivery: a message is acknowledged to the broker (manual PUBACK) only after the batch
holding it is committed. When the queue is full, intake blocks: the collector stops
reading and the broker keeps queuing (named decision: block, never drop). When the
database is down, the writer retries the same batch with capped doubling backoff and
acknowledges nothing meanwhile.

Acks carry the broker's packet ids, which are only meaningful on the connection the
message came in on; after a reconnect the broker redelivers whatever was unacknowledged
(with its persistent session) and those copies are acknowledged instead. So every
message remembers its connection generation and acks from an older one are dropped.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from apscheduler.schedulers.background import BackgroundScheduler
from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags, MQTTMessage
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from prometheus_client import CollectorRegistry, disable_created_metrics, start_http_server

from collector.backlog import Backlog
from collector.config import CollectorSettings
from collector.decode import Decoder, Limits
from collector.ingest import BatchWriter, Inbound
from collector.metrics import CollectorMetrics
from collector.watchdog import Watchdog
from contract import topics
from contract.mqtt import make_client, start_persistent

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
# Allocations between two young-generation collections (CPython's default: 700).
GC_GEN0_THRESHOLD = 100_000


def utc_now() -> datetime:
    return datetime.now(UTC)


class Collector:
    def __init__(
        self, settings: CollectorSettings, metrics: CollectorMetrics, clock: Clock = utc_now
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.decoder = Decoder(
            Limits(
                max_payload_bytes=settings.max_payload_bytes,
                future_tolerance=timedelta(seconds=settings.future_tolerance_s),
                max_age=timedelta(days=settings.retention_days),
            )
        )
        self.backlog: Backlog[Inbound] = Backlog(
            settings.queue_max_messages, settings.batch_max_messages
        )
        # Committed batches waiting for their acknowledgements (see `_ack_committed`).
        self._committed: deque[list[Inbound]] = deque()
        self._accepting = True
        self._stopping = threading.Event()
        self._generation = 0
        self._ack_lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._db_failing = False
        self.client = make_client(settings, settings.mqtt_client_id, manual_ack=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self._writer = threading.Thread(target=self._write_loop, name="batch-writer")

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        start_persistent(self.client, self.settings)
        self._writer.start()

    def stop(self) -> None:
        """Stops intake, commits and acknowledges everything queued, then disconnects.

        Messages that arrive after intake stops are left unacknowledged in the broker
        session and delivered again when this collector (same client id) returns.
        """
        self._accepting = False
        self._stopping.set()
        self.backlog.close()
        self._writer.join()
        self._ack_committed()
        self.client.disconnect()
        self.client.loop_stop()
        if self._conn is not None:
            self._conn.close()

    # -- MQTT callbacks (paho's network thread) -----------------------------------------

    def _on_connect(
        self,
        client: Client,
        _userdata: object,
        _flags: ConnectFlags,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            return
        with self._ack_lock:
            self._generation += 1
        self.metrics.broker_connected.set(1)
        log.info("connected to %s:%s", self.settings.mqtt_host, self.settings.mqtt_port)
        options = SubscribeOptions(qos=1)
        kinds = ("telemetry", "status")
        if self.settings.shared_subscription:
            filters = [topics.shared_subscription(kind) for kind in kinds]
        else:
            filters = [topics.all_nodes(kind) for kind in kinds]
        client.subscribe([(topic_filter, options) for topic_filter in filters])

    def _on_disconnect(
        self,
        _client: Client,
        _userdata: object,
        _flags: DisconnectFlags,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        with self._ack_lock:
            self._generation += 1
        self.metrics.broker_connected.set(0)
        if not self._stopping.is_set():
            log.warning("disconnected from the broker (%s); reconnecting", reason)

    def _on_message(self, _client: Client, _userdata: object, msg: MQTTMessage) -> None:
        if not self._accepting:
            return
        if self._committed:
            self._ack_committed()
        received_at = self.clock()
        payload = bytes(msg.payload)
        decoded = self.decoder.decode(msg.topic, payload, received_at)
        self.metrics.received.count(msg.topic.rpartition("/")[2])
        item = Inbound(msg.mid, msg.qos, self._generation, received_at, payload, decoded)
        if self.backlog.full():
            self.metrics.queue_full.inc()
        # Blocks this thread while full: the collector stops reading, the broker queues.
        self.backlog.put(item, self._still_accepting)

    def _still_accepting(self) -> bool:
        return self._accepting

    # -- batch writer thread ----------------------------------------------------------------

    def _write_loop(self) -> None:
        while (
            batch := self.backlog.take(self.settings.batch_max_seconds, self._ack_committed)
        ) is not None:
            if not self._commit_with_retry(batch):
                return
            self._committed.append(batch)
            self.metrics.queue_depth.set(len(self.backlog))

    def _commit_with_retry(self, batch: list[Inbound]) -> bool:
        """Commits the batch, retrying while the database is unavailable. False only if
        asked to stop while still failing (nothing acknowledged: the broker keeps it)."""
        delay = 0.5
        while True:
            started = time.perf_counter()
            try:
                writer = BatchWriter(self._connection())
                result = writer.write(batch, self.clock())
            except psycopg.Error as exc:
                self._database_failed(exc)
                if self._stopping.wait(delay):
                    log.error(
                        "stopping with %d uncommitted messages left to the broker",
                        len(batch) + len(self.backlog),
                    )
                    return False
                delay = min(delay * 2, self.settings.db_retry_max_s)
                continue
            self._database_ok()
            m = self.metrics
            m.commit_seconds.observe(time.perf_counter() - started)
            m.batch_size.observe(len(batch))
            m.written.inc(result.inserted)
            m.duplicates.inc(result.attempted - result.inserted)
            for reason, count in result.dead.items():
                m.dead_letters.labels(reason.value).inc(count)
            for lag in result.lags_s:
                m.lag_seconds.observe(lag)
            return True

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self.settings.database_url,
                autocommit=True,
                prepare_threshold=self.settings.prepare_threshold,
                connect_timeout=10,
            )
        return self._conn

    def _database_failed(self, exc: psycopg.Error) -> None:
        self.metrics.commit_failures.inc()
        self.metrics.database_up.set(0)
        # Logged once at ERROR, then at DEBUG until the database is back.
        log.log(
            logging.DEBUG if self._db_failing else logging.ERROR,
            "database write failed, will retry: %s",
            exc,
        )
        self._db_failing = True
        if self._conn is not None and self._conn.broken:
            self._conn.close()

    def _database_ok(self) -> None:
        if self._db_failing:
            log.info("database writes recovered")
        self._db_failing = False
        self.metrics.database_up.set(1)

    def _ack_committed(self) -> None:
        """Acknowledges the committed batches. The network thread does it as it takes the
        next message; the writer only when no message is coming (an idle backlog), or at
        stop. Each paho ack wakes the network loop through a socket pair, releasing
        the GIL: from the writer, 5,000 acks a batch meant as many thread switches."""
        with self._ack_lock:
            generation = self._generation
            while self._committed:
                for item in self._committed.popleft():
                    if item.qos > 0 and item.generation == generation:
                        self.client.ack(item.mid, item.qos)


def run(settings: CollectorSettings, stop: threading.Event) -> None:
    """Runs a collector until `stop` is set, then drains, acknowledges and exits."""
    # The cyclic garbage collector kept rescanning the thousands of decoded samples a
    # batch holds (and everything imported), a third of the collector's CPU a message in
    # the ingest benchmark. Messages are freed by reference counting; collect cycles
    # rarely, and never rescan what exists at start.
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 50, 1000)
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
