"""The agent's MQTT side: retained status with a last will, telemetry out of the
buffer, the hub's confirmations and commands in.

Live samples go out one by one as they are taken; the backlog goes out in seq order in
`{"samples": [...]}` batches, a bounded window at a time (samples sent and not yet
confirmed) and at most `replay_max_samples_per_s`, so a week of backlog never holds up
the current reading nor floods the hub.

A sample leaves the buffer when the hub confirms it committed it (`nodes/{id}/ingested`,
contract/confirmations.py), or, with `ingest_confirmations: false` (hubs that predate
confirmations), when the broker acknowledged it (PUBACK). What stays unconfirmed is sent
again after a timeout (edge/unconfirmed.py), and everything unconfirmed is sent again on
every new connection: the hub stores a sample once, whatever copies arrive.

paho calls on_publish and message callbacks while holding its own message lock, which
publish() also takes: so PUBACKs and confirmations are only queued there and applied by
the agent thread in `pump()` (a confirmation is acknowledged to the broker once its
samples are deleted). The broker sends at most COMMAND_QUEUE_CAPACITY unacknowledged
messages at a time (receive maximum), which bounds that queue.

Commands are handled one at a time on the command worker's thread, in the order they
came, and each is acknowledged to the broker only once handled (acked on
`nodes/{id}/acks`, or staged on disk for the agent it restarts into;
contract/delivery_worker.py). A command still queued when the agent stops or restarts
is not acknowledged: the broker keeps it in the agent's persistent session and delivers
it again to the next run. At most COMMAND_QUEUE_CAPACITY commands are unacknowledged at
a time; the broker holds back the rest (named decision: stop reading).
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Literal

from paho.mqtt.client import Client, MQTTMessage
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import ValidationError

from contract import topics
from contract.confirmations import INGEST_CONFIRMATION, seq_ranges
from contract.delivery_worker import DeliveryWorker
from contract.failure_log import FailureLog
from contract.mqtt import Delivery, MqttError, MqttLink
from contract.telemetry import NODE_STATUS, NodeStatus
from edge.buffer import SampleBuffer
from edge.config import EdgeSettings
from edge.status_page import EdgeMetrics
from edge.unconfirmed import ReplayPace, Unconfirmed

log = logging.getLogger(__name__)

COMMAND_QUEUE_CAPACITY = 100
STOP_TIMEOUT_S = 5.0


class Publisher:
    def __init__(
        self,
        settings: EdgeSettings,
        buffer: SampleBuffer,
        agent_version: str,
        clock: Callable[[], datetime],
        handle_command: Callable[[bytes], None],
        metrics: EdgeMetrics,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """`handle_command(payload)` runs on the command worker's thread and must not
        raise: a command it returns from is acknowledged to the broker. `monotonic`
        times resends and the replay rate."""
        self.settings = settings
        self.buffer = buffer
        self.agent_version = agent_version
        self.clock = clock
        self.metrics = metrics
        self.confirmations = settings.ingest_confirmations
        self._acks: deque[tuple[int, bool]] = deque()
        self._confirmations: deque[Delivery] = deque()
        self._in_flight: dict[int, list[int]] = {}  # mid -> seqs; agent thread only
        self.unconfirmed = Unconfirmed(settings.confirm_timeout_s, monotonic)
        self._pace = ReplayPace(settings.replay_max_samples_per_s, monotonic)
        self._replay_from = 0  # every buffered seq below it is sent or unconfirmed
        self._connects = 0  # written on the network thread only
        self._connects_seen = 0
        self._refusals = FailureLog(log)  # agent thread only
        self._bad_confirmations = FailureLog(log)  # agent thread only
        self._timeouts = FailureLog(log)  # agent thread only
        node_id = settings.node_id
        subscriptions = [(topics.commands(node_id), 1)]
        if self.confirmations:
            subscriptions.append((topics.ingested(node_id), 1))
        self.link = MqttLink(
            settings,
            subscriptions,
            receive_maximum=COMMAND_QUEUE_CAPACITY,
            will=(topics.status(node_id), self._status_body("offline")),
            on_connection=self._connection_changed,
        )
        self.connected = self.link.connected
        self.link.client.on_publish = self._on_publish
        if self.confirmations:
            self.link.client.message_callback_add(topics.ingested(node_id), self._on_confirmation)
        self.commands = DeliveryWorker(
            self.link,
            topics.commands(node_id),
            lambda _topic, payload: handle_command(payload),
            name="commands",
        )

    def start(self) -> None:
        self.commands.start()
        self.link.start()

    def stop(self) -> None:
        """Stops taking commands, says offline (retained) and disconnects; unconfirmed
        samples stay buffered, unhandled commands and confirmations with the broker."""
        self.commands.stop(STOP_TIMEOUT_S)
        if self.connected.is_set():
            try:
                self.link.publish_and_wait(
                    topics.status(self.settings.node_id),
                    self._status_body("offline"),
                    STOP_TIMEOUT_S,
                    retain=True,
                )
            except MqttError as exc:
                log.warning("offline status not confirmed (the last will says it): %s", exc)
        self.link.stop()

    def _status_body(
        self,
        state: Literal["online", "offline"],
        buffer_depth: int | None = None,
        oldest_unconfirmed_age_s: int | None = None,
        tunnel: Mapping[str, Any] | None = None,
        safety_lock: Mapping[str, Any] | None = None,
        strategy: Mapping[str, Any] | None = None,
    ) -> str:
        """The contract's NodeStatus, validated here as the collector will."""
        status = NodeStatus(state=state, ts=self.clock(), agent_version=self.agent_version)
        if buffer_depth is not None:
            status["buffer_depth"] = buffer_depth
        if oldest_unconfirmed_age_s is not None:
            status["oldest_unconfirmed_age_s"] = oldest_unconfirmed_age_s
        if tunnel is not None:
            status["tunnel"] = tunnel  # type: ignore[typeddict-item]  # validated below
        if safety_lock is not None:
            status["safety_lock"] = safety_lock  # type: ignore[typeddict-item]  # likewise
        if strategy is not None:
            status["strategy"] = strategy  # type: ignore[typeddict-item]
        return NODE_STATUS.dump_json(NODE_STATUS.validate_python(status)).decode()

    def publish_status(
        self,
        buffer_depth: int | None = None,
        oldest_unconfirmed_age_s: int | None = None,
        tunnel: Mapping[str, Any] | None = None,
        safety_lock: Mapping[str, Any] | None = None,
        strategy: Mapping[str, Any] | None = None,
    ) -> None:
        """The retained heartbeat: online, the Pi's clock (`ts`), its buffer depth, the
        age of its oldest buffered sample, the tunnel's state (contract/tunnel.py), the
        safety lock and the strategy (contract/site_control.py)."""
        if self.connected.is_set():
            self.link.publish(
                topics.status(self.settings.node_id),
                self._status_body(
                    "online",
                    buffer_depth,
                    oldest_unconfirmed_age_s,
                    tunnel,
                    safety_lock,
                    strategy,
                ),
                retain=True,
            )

    # -- paho's network thread ----------------------------------------------------------

    def _connection_changed(self, up: bool) -> None:
        if up:
            self._connects += 1
            self.publish_status()

    def _on_publish(
        self,
        _client: Client,
        _userdata: object,
        mid: int,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        self._acks.append((mid, not reason.is_failure))

    def _on_confirmation(self, _client: Client, _userdata: object, msg: MQTTMessage) -> None:
        self._confirmations.append(
            Delivery(msg.topic, bytes(msg.payload), msg.mid, msg.qos, self.link.generation)
        )

    # -- the agent thread -----------------------------------------------------------------

    @property
    def connections(self) -> int:
        """How many times the link has connected so far."""
        return self._connects

    def send(self, kind: str, body: dict[str, Any], retain: bool = False) -> None:
        """Publishes a JSON body on `nodes/{node_id}/{kind}` (acks, logs, config), QoS 1."""
        self.link.publish(
            topics.node_topic(self.settings.node_id, kind), json.dumps(body), retain=retain
        )

    def _apply_acks(self) -> None:
        while self._acks:
            mid, accepted = self._acks.popleft()
            seqs = self._in_flight.pop(mid, None)
            if seqs is None:
                continue  # a status message
            if not accepted:
                # Left unconfirmed and sent again after the timeout: a broker ACL or
                # quota problem.
                self._refusals.failed("broker refused telemetry (seqs %s..%s)", seqs[0], seqs[-1])
                continue
            if self._refusals.recover():
                log.info("broker accepts telemetry again")
            if not self.confirmations:
                ranges = seq_ranges(seqs)
                self.buffer.delete_ranges(ranges)
                self.unconfirmed.confirmed(ranges)

    def _apply_confirmations(self) -> None:
        """Deletes what the hub confirmed, one transaction per confirmation, then
        acknowledges it. A malformed one is counted, logged and acknowledged: it came
        from the hub's side, and no copy of it will ever be better."""
        while self._confirmations:
            delivery = self._confirmations.popleft()
            try:
                ranges = INGEST_CONFIRMATION.validate_json(delivery.payload)["seqs"]
            except ValidationError as exc:
                self.metrics.bad_confirmations_total.inc()
                # The reason, never the input: it may be a thousand ranges long.
                error = exc.errors(include_url=False, include_input=False)[0]
                self._bad_confirmations.failed(
                    "malformed confirmation on %s dropped: %s at %s",
                    delivery.topic,
                    error["msg"],
                    ".".join(map(str, error["loc"])) or "the top",
                )
            else:
                self.buffer.delete_ranges(ranges)
                self.unconfirmed.confirmed(ranges)
                if self._bad_confirmations.recover():
                    log.info("confirmations are well-formed again")
            self.link.ack(delivery)

    def _send(self, payload: str, seqs: list[int], replay: bool) -> None:
        self.unconfirmed.sent(seqs, replay)
        info = self.link.publish(topics.telemetry(self.settings.node_id), payload)
        self._in_flight[info.mid] = seqs

    def publish_live(self, seq: int, body: str) -> None:
        """Sends a just-taken sample at once, when connected (else it waits for replay)."""
        self._apply_acks()
        if self.connected.is_set():
            self._follow_connection()
            self._send(body, [seq], replay=False)

    def _follow_connection(self) -> None:
        """After a new connection (with confirmations on), everything sent before it and
        unconfirmed goes again: the broker may have lost what it queued for the hub."""
        connects = self._connects
        if connects != self._connects_seen:
            self._connects_seen = connects
            if self.confirmations:
                self.unconfirmed.clear()
                self._replay_from = 0

    def _resend_expired(self) -> None:
        waited_s = self.unconfirmed.timeout_s * self.unconfirmed.backoff
        expired = self.unconfirmed.expired()
        if expired:
            self.metrics.resent_total.inc(len(expired))
            self._replay_from = min(self._replay_from, min(expired))
            self._timeouts.failed(
                "%d samples sent and unconfirmed for %g s: sending them again (next in %g s)",
                len(expired),
                waited_s,
                self.unconfirmed.timeout_s * self.unconfirmed.backoff,
            )
        elif self.unconfirmed.backoff == 1 and self._timeouts.recover():
            log.info("the hub confirms samples again")

    def pump(self) -> bool:
        """Applies PUBACKs and confirmations, resends what is due and tops up the replay
        window. True while a backlog waits to be sent."""
        self._apply_acks()
        self._apply_confirmations()
        if not self.connected.is_set():
            return False
        self._follow_connection()
        self._resend_expired()
        limit = self.settings.replay_batch_samples
        window = limit * self.settings.replay_batches_in_flight
        while self.unconfirmed.replayed + limit <= window and self._pace.ready():
            rows, self._replay_from = self.buffer.pending(
                limit, self._replay_from, self.unconfirmed
            )
            if not rows:
                return False
            payload = '{"samples":[' + ",".join(body for _, body in rows) + "]}"
            self._send(payload, [seq for seq, _ in rows], replay=True)
            self._pace.spent(len(rows))
        return True
