"""The agent's MQTT side: retained status with a last will, telemetry out of the
buffer, deleting what the broker acknowledged, and commands in.

Live samples go out one by one as they are taken; the backlog goes out oldest first in
`{"samples": [...]}` batches, a bounded number at a time, so a week of backlog never
holds up the current reading.

paho calls on_publish while holding its own message lock, which publish() also takes:
so acknowledgements are only queued there and applied by the agent thread in `pump()`.

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
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from paho.mqtt.client import Client
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from contract import topics
from contract.delivery_worker import DeliveryWorker
from contract.failure_log import FailureLog
from contract.mqtt import MqttError, MqttLink
from contract.telemetry import NODE_STATUS, NodeStatus
from edge.buffer import SampleBuffer
from edge.config import EdgeSettings

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
    ) -> None:
        """`handle_command(payload)` runs on the command worker's thread and must not
        raise: a command it returns from is acknowledged to the broker."""
        self.settings = settings
        self.buffer = buffer
        self.agent_version = agent_version
        self.clock = clock
        self._acks: deque[tuple[int, bool]] = deque()
        self._in_flight: dict[int, list[int]] = {}  # mid -> seqs; agent thread only
        self._replays_in_flight: set[int] = set()
        self._refusals = FailureLog(log)  # agent thread only
        node_id = settings.node_id
        self.link = MqttLink(
            settings,
            [(topics.commands(node_id), 1)],
            receive_maximum=COMMAND_QUEUE_CAPACITY,
            will=(topics.status(node_id), self._status_body("offline")),
            on_connection=self._connection_changed,
        )
        self.connected = self.link.connected
        self.link.client.on_publish = self._on_publish
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
        """Stops taking commands, says offline (retained) and disconnects; unacknowledged
        samples stay buffered, unhandled commands with the broker."""
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
        self, state: Literal["online", "offline"], buffer_depth: int | None = None
    ) -> str:
        """The contract's NodeStatus, validated here as the collector will."""
        status = NodeStatus(state=state, ts=self.clock(), agent_version=self.agent_version)
        if buffer_depth is not None:
            status["buffer_depth"] = buffer_depth
        return NODE_STATUS.dump_json(NODE_STATUS.validate_python(status)).decode()

    def publish_status(self, buffer_depth: int | None = None) -> None:
        """The retained heartbeat: online, the Pi's clock (`ts`) and its buffer depth."""
        if self.connected.is_set():
            self.link.publish(
                topics.status(self.settings.node_id),
                self._status_body("online", buffer_depth),
                retain=True,
            )

    # -- paho's network thread ----------------------------------------------------------

    def _connection_changed(self, up: bool) -> None:
        if up:
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

    # -- the agent thread -----------------------------------------------------------------

    def send(self, kind: str, body: dict[str, Any]) -> None:
        """Publishes a JSON body on `nodes/{node_id}/{kind}` (acks, logs), QoS 1."""
        self.link.publish(topics.node_topic(self.settings.node_id, kind), json.dumps(body))

    def _apply_acks(self) -> None:
        while self._acks:
            mid, accepted = self._acks.popleft()
            seqs = self._in_flight.pop(mid, None)
            self._replays_in_flight.discard(mid)
            if seqs is None:
                continue  # a status message
            if not accepted:
                # Kept in the buffer and sent again later: a broker ACL or quota problem.
                self._refusals.failed("broker refused telemetry (seqs %s..%s)", seqs[0], seqs[-1])
                continue
            self.buffer.delete(seqs)
            if self._refusals.recover():
                log.info("broker accepts telemetry again")

    def _send(self, payload: str, seqs: list[int]) -> int:
        info = self.link.publish(topics.telemetry(self.settings.node_id), payload)
        self._in_flight[info.mid] = seqs
        return info.mid

    def publish_live(self, seq: int, body: str) -> None:
        """Sends a just-taken sample at once, when connected (else it waits for replay)."""
        self._apply_acks()
        if self.connected.is_set():
            self._send(body, [seq])

    def pump(self) -> bool:
        """Applies acknowledgements and tops up the replay window. True while a backlog
        remains to be sent."""
        self._apply_acks()
        if not self.connected.is_set():
            return False
        limit = self.settings.replay_batch_samples
        while len(self._replays_in_flight) < self.settings.replay_batches_in_flight:
            in_flight = [seq for seqs in self._in_flight.values() for seq in seqs]
            rows = self.buffer.pending(limit, exclude=in_flight)
            if not rows:
                return False
            payload = '{"samples":[' + ",".join(body for _, body in rows) + "]}"
            self._replays_in_flight.add(self._send(payload, [seq for seq, _ in rows]))
        return True
