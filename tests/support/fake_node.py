"""A node as the control API sees it, for tests of the API itself: an MQTT client with the
credentials the API issued at enrollment, recording the commands it receives and acking
as the test tells it (the real agent answers in tests/control_api/test_end_to_end.py)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from contract import topics
from tests.support.fleet import mqtt_client, publish_all, publish_json, unique
from tests.support.services import Broker, Database, wait_for

CHARGE = {"type": "FORCE_CHARGE", "params": {"power_w": 2500, "duration_s": 600}}


def fetch_logs(lines: int) -> dict[str, Any]:
    return {"type": "FETCH_LOGS", "params": {"lines": lines}}


class FakeNode:
    def __init__(self, broker: Broker, credentials: dict[str, Any]) -> None:
        self.id = credentials["node_id"]
        self.secret = credentials["node_secret"].encode()
        self.commands: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.client = mqtt_client(broker, self.id, credentials["mqtt_password"], client_id=self.id)
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        self.client.subscribe(topics.commands(self.id), qos=1)
        assert subscribed.wait(5)

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self._lock:
            self.commands.append(json.loads(msg.payload))

    def received(self, count: int = 1) -> list[dict[str, Any]]:
        wait_for(lambda: len(self.commands) >= count, 10, f"{count} command(s) at the node")
        return self.commands

    def ack(self, command_id: str, state: str, detail: str = "") -> None:
        body = {
            "id": command_id,
            "state": state,
            "detail": detail,
            "ts": datetime.now(UTC).isoformat(),
        }
        publish_json(self.client, topics.acks(self.id), body)

    def send_logs(self, *payloads: bytes | str) -> None:
        """Publishes each payload on the node's own logs topic, as the agent's chunks go."""
        publish_all(self.client, [(topics.logs(self.id), p) for p in payloads])

    def report_config(self, *payloads: bytes | str) -> None:
        """Publishes each payload on the node's own config topic, as the agent reports."""
        publish_all(self.client, [(topics.config(self.id), p) for p in payloads])

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def set_state(database: Database, node_id: str, state: str) -> None:
    """What the collector would record from the node's status."""
    with database.connect() as conn:
        conn.execute(
            "INSERT INTO node_status (node_id, state, last_seen_at) VALUES (%s, %s, now())"
            " ON CONFLICT (node_id) DO UPDATE SET state = EXCLUDED.state",
            (node_id, state),
        )


@contextmanager
def online_node(
    api: Any, admin: Any, tenant_id: int, database: Database, broker: Broker
) -> Iterator[FakeNode]:
    """A node enrolled through the API by `admin`, connected and marked online."""
    credentials = api.post(
        "/nodes", json={"id": unique("node"), "tenant_id": tenant_id}, headers=admin.headers
    ).json()
    set_state(database, credentials["node_id"], "online")
    node = FakeNode(broker, credentials)
    try:
        yield node
    finally:
        node.close()


def command_state(api: Any, who: Any, command_id: str, state: str, timeout: float = 10) -> Any:
    """Waits until the command is in `state`; `who` is a User or the Actors (operator A)."""
    user = getattr(who, "operator_a", who)

    def reached() -> Any:
        body = api.get(f"/commands/{command_id}", headers=user.headers).json()
        return body if body["state"] == state else None

    return wait_for(reached, timeout, f"command {command_id} to be {state}")
