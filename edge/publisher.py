"""The agent's MQTT side: retained status with a last will, telemetry out of the
buffer, and deleting what the broker acknowledged.

Live samples go out one by one as they are taken; the backlog goes out oldest first in
`{"samples": [...]}` batches, a bounded number at a time, so a week of backlog never
holds up the current reading.

paho calls on_publish while holding its own message lock, which publish() also takes:
so acknowledgements are only queued there and applied by the agent thread in `pump()`.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags, MQTTMessage
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from contract import topics
from contract.mqtt import make_client, start_persistent
from edge.buffer import SampleBuffer
from edge.config import EdgeSettings

log = logging.getLogger(__name__)


class Publisher:
    def __init__(
        self,
        settings: EdgeSettings,
        buffer: SampleBuffer,
        agent_version: str,
        clock: Callable[[], datetime],
        on_command: Callable[[bytes], None],
    ) -> None:
        self.settings = settings
        self.buffer = buffer
        self.agent_version = agent_version
        self.clock = clock
        self.connected = threading.Event()
        self._acks: deque[tuple[int, bool]] = deque()
        self._in_flight: dict[int, list[int]] = {}  # mid -> seqs; agent thread only
        self._replays_in_flight: set[int] = set()
        self._refused_logged = False
        self.client = make_client(settings, settings.mqtt_client_id)
        self.client.will_set(
            topics.status(settings.node_id), self._status_body("offline"), qos=1, retain=True
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.on_command = on_command
        self.client.message_callback_add(topics.commands(settings.node_id), self._on_command)

    def start(self) -> None:
        start_persistent(self.client, self.settings)

    def stop(self) -> None:
        """Says offline (retained) and disconnects; unacknowledged samples stay buffered."""
        if self.connected.is_set():
            info = self.client.publish(
                topics.status(self.settings.node_id), self._status_body("offline"), 1, True
            )
            info.wait_for_publish(5)
        self.client.disconnect()
        self.client.loop_stop()

    def _status_body(self, state: str, **extra: Any) -> str:
        body = {
            "state": state,
            "ts": self.clock().isoformat(),
            "agent_version": self.agent_version,
            **extra,
        }
        return json.dumps(body)

    def publish_status(self, **extra: Any) -> None:
        """The retained heartbeat: online, with the Pi's clock and buffer depth."""
        if self.connected.is_set():
            self.client.publish(
                topics.status(self.settings.node_id),
                self._status_body("online", **extra),
                qos=1,
                retain=True,
            )

    # -- paho's network thread ----------------------------------------------------------

    def _on_connect(
        self,
        _client: Client,
        _userdata: object,
        _flags: ConnectFlags,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            return
        log.info("connected to %s:%s", self.settings.mqtt_host, self.settings.mqtt_port)
        self.connected.set()
        self.client.subscribe(topics.commands(self.settings.node_id), qos=1)
        self.publish_status()

    def _on_disconnect(
        self,
        _client: Client,
        _userdata: object,
        _flags: DisconnectFlags,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        if self.connected.is_set():
            log.warning("disconnected from the broker (%s); buffering", reason)
        self.connected.clear()

    def _on_publish(
        self,
        _client: Client,
        _userdata: object,
        mid: int,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        self._acks.append((mid, not reason.is_failure))

    def _on_command(self, _client: Client, _userdata: object, msg: MQTTMessage) -> None:
        self.on_command(bytes(msg.payload))

    # -- the agent thread -----------------------------------------------------------------

    def send(self, kind: str, body: dict[str, Any]) -> None:
        """Publishes a JSON body on `nodes/{node_id}/{kind}` (acks, logs), QoS 1."""
        self.client.publish(topics.node_topic(self.settings.node_id, kind), json.dumps(body), 1)

    def _apply_acks(self) -> None:
        while self._acks:
            mid, accepted = self._acks.popleft()
            seqs = self._in_flight.pop(mid, None)
            self._replays_in_flight.discard(mid)
            if seqs is None:
                continue  # a status message
            if accepted:
                self.buffer.delete(seqs)
            elif not self._refused_logged:
                # Kept in the buffer and sent again later: a broker ACL or quota problem.
                log.error("broker refused telemetry (seqs %s..%s)", seqs[0], seqs[-1])
                self._refused_logged = True

    def _send(self, payload: str, seqs: list[int]) -> int:
        info = self.client.publish(topics.telemetry(self.settings.node_id), payload, qos=1)
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
