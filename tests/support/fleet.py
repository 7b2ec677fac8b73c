"""Tenants, nodes and their broker accounts for tests; telemetry payload builders."""

from __future__ import annotations

import json
import secrets
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from paho.mqtt.client import Client, MQTTMessageInfo
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from control_api.broker_security import (
    SERVICE_USERNAMES,
    DynsecClient,
)
from control_api.demo.services import scrape as scrape
from tests.support.services import Broker, Database, wait_for


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class Node:
    id: str
    tenant_id: int
    password: str


def create_tenant(db: Database, slug: str | None = None) -> int:
    slug = slug or unique("t")
    with db.connect() as conn:
        row = conn.execute(
            "INSERT INTO tenants (slug, name) VALUES (%s, %s) RETURNING id", (slug, slug.upper())
        ).fetchone()
    return int(row[0])


def create_node(
    db: Database, tenant_id: int, node_id: str | None = None, enabled: bool = True
) -> str:
    node_id = node_id or unique("node")
    with db.connect() as conn:
        conn.execute(
            "INSERT INTO nodes (id, tenant_id, display_name, enabled) VALUES (%s, %s, %s, %s)",
            (node_id, tenant_id, node_id, enabled),
        )
    return node_id


def mqtt_client(
    broker: Broker, username: str, password: str, client_id: str | None = None
) -> Client:
    """A connected v5 client with its network loop running; raise if refused. By default
    a node account connects under its own id (the only client id the broker lets it
    use), a service account under a fresh one."""
    if client_id is None:
        client_id = unique(username) if username in SERVICE_USERNAMES else username
    client = Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.username_pw_set(username, password)
    connected = threading.Event()
    outcome: list[Any] = []

    def on_connect(_c: Client, _u: object, _f: object, reason: Any, _p: object) -> None:
        outcome.append(reason)
        connected.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    if not connected.wait(10) or outcome[0].is_failure:
        client.loop_stop()
        raise ConnectionRefusedError(f"{username}: {outcome[0] if outcome else 'no CONNACK'}")
    return client


@contextmanager
def dynsec(broker: Broker) -> Iterator[DynsecClient]:
    client = mqtt_client(broker, "admin", broker.passwords["admin"])
    try:
        yield DynsecClient(client)
    finally:
        client.disconnect()
        client.loop_stop()


def enroll(
    db: Database, broker: Broker, tenant_id: int, count: int = 1, enabled: bool = True
) -> list[Node]:
    """Creates nodes in the database and their broker accounts."""
    nodes = []
    with dynsec(broker) as admin:
        for _ in range(count):
            node_id = create_node(db, tenant_id, enabled=enabled)
            password = secrets.token_urlsafe(12)
            admin.add_node(node_id, password)
            nodes.append(Node(node_id, tenant_id, password))
    return nodes


def sample(node_id: str, seq: int, ts: datetime | None = None, **overrides: Any) -> dict[str, Any]:
    """A valid telemetry sample (seed schema + seq + power fields)."""
    body: dict[str, Any] = {
        "node_id": node_id,
        "timestamp": (ts or datetime.now(UTC)).isoformat(),
        "seq": seq,
        "battery": {"soc_percent": 50.0 + seq % 50, "voltage": 52.1, "power_w": -300.0},
        "solar": {"power_w": 1500.0},
        "grid": {"current_price": 0.55, "mode": "SELF_CONSUMPTION", "power_w": 200.0},
        "load": {"power_w": 1400.0},
        "optimizer": {
            "latest_decision": "charge from PV",
            "daily_savings_pln": 1.5,
            "daily_cost_pln": 0.4,
        },
        # The powers above held for 5 seconds (contract/fields.py: the energy part).
        "energy": {
            "interval_s": 5.0,
            "covered_s": 5.0,
            "pv_wh": 2.08,
            "grid_import_wh": 0.28,
            "grid_export_wh": 0.0,
            "load_wh": 1.94,
            "battery_charge_wh": 0.42,
            "battery_discharge_wh": 0.0,
            "gap_pv_wh": 0.0,
            "gap_grid_import_wh": 0.0,
            "gap_grid_export_wh": 0.0,
        },
    }
    body.update(overrides)
    return body


def publish_all(client: Client, messages: Sequence[tuple[str, bytes | str]], qos: int = 1) -> None:
    infos: list[MQTTMessageInfo] = [client.publish(t, p, qos=qos) for t, p in messages]
    for info in infos:
        info.wait_for_publish(10)
        if info.rc != 0 or not info.is_published():
            raise AssertionError(f"publish failed rc={info.rc}")


def publish_json(client: Client, topic: str, body: Any) -> None:
    publish_all(client, [(topic, json.dumps(body))])


def dead_letters(db: Database, node_id: str) -> list[tuple[Any, ...]]:
    """The node's dead letters as (reason, detail, payload), oldest first."""
    with db.connect() as conn:
        rows: list[tuple[Any, ...]] = conn.execute(
            "SELECT reason, detail, payload FROM dead_letters WHERE node_id = %s"
            " ORDER BY received_at",
            (node_id,),
        ).fetchall()
    return rows


def stored_seqs(db: Database, node_id: str) -> list[int]:
    """The node's seqs in the telemetry table, in order."""
    with db.connect() as conn:
        rows = conn.execute(
            "SELECT seq FROM telemetry WHERE node_id = %s ORDER BY seq", (node_id,)
        ).fetchall()
    return [row[0] for row in rows]


def count_rows(db: Database, sql: str, params: tuple[Any, ...] = ()) -> int:
    with db.connect() as conn:
        return int(conn.execute(sql, params).fetchone()[0])


def wait_rows(
    db: Database, expected: int, sql: str, params: tuple[Any, ...] = (), timeout: float = 30
) -> int:
    """Waits until the count query returns `expected`; returns the final count."""
    wait_for(
        lambda: count_rows(db, sql, params) >= expected, timeout, f"{expected} rows from {sql}"
    )
    return count_rows(db, sql, params)
