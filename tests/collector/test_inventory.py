"""Node inventories: decoded and bounded (every hostile payload is a dead letter with
its reason), stored as the current inventory plus a history row per change."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from collector.decode import Decoder, Limits
from collector.inventory import MAX_HISTORY_ROWS_PER_NODE, changes
from contract import topics
from contract.inventory import MAX_INVENTORY_BYTES
from tests.support.fleet import (
    count_rows,
    create_tenant,
    dead_letters,
    enroll,
    mqtt_client,
    publish_all,
    publish_json,
    scrape,
    wait_rows,
)
from tests.support.services import wait_for

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
# Midnight of 1 January, year 1, at UTC+14: before year 1 in UTC.
YEAR_ONE_EAST = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))


def inventory(node_id: str, ts: datetime, firmware: str = "1.0.0", **parts: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "node_id": node_id,
        "ts": ts.isoformat(),
        "inverter": {
            "manufacturer": "wattfleet",
            "model": "simulated hybrid",
            "options": "battery",
            "firmware": firmware,
            "serial": "SIM-000007",
            "sunspec_model": 103,
        },
        "battery": {
            "sunspec_model": 802,
            "capacity_wh": 10000.0,
            "capacity_ah": 195.3,
            "max_charge_w": 5000.0,
            "max_discharge_w": 5000.0,
        },
        "meter": {"sunspec_model": 203},
        "agent": {"version": "1.2.3", "python": "3.11.2", "os": "Linux-6.1-aarch64"},
    }
    for key, value in parts.items():
        if isinstance(value, dict) and isinstance(body.get(key), dict):
            body[key] = {**body[key], **value}
        else:
            body[key] = value
    return body


def _decode(node_id: str, body: Any) -> tuple[str | None, str]:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    out = Decoder(Limits()).decode(topics.inventory(node_id), payload, NOW)
    if out.dead:
        return out.dead[0].reason.value, out.dead[0].detail
    assert out.inventory is not None
    return None, ""


HOSTILE: list[tuple[str, str, Any]] = [
    ("invalid json", "invalid_json", b"{not json"),
    ("array", "schema_violation", b"[1, 2]"),
    ("string capacity", "schema_violation", inventory("n1", NOW, battery={"capacity_wh": "10"})),
    ("bool model id", "schema_violation", inventory("n1", NOW, meter={"sunspec_model": True})),
    ("unknown meter model", "schema_violation", inventory("n1", NOW, meter={"sunspec_model": 1})),
    ("firmware too long", "schema_violation", inventory("n1", NOW, firmware="1" * 17)),
    ("control character", "schema_violation", inventory("n1", NOW, firmware="1.0\x1b[2J")),
    ("NUL", "schema_violation", inventory("n1", NOW, firmware="1.0\x00")),
    ("lone surrogate", "invalid_json", b'{"node_id": "\\ud800"}'),
    ("unknown key", "schema_violation", inventory("n1", NOW, extra=1)),
    ("no inverter", "schema_violation", inventory("n1", NOW, inverter=None)),
    ("empty serial", "schema_violation", inventory("n1", NOW, inverter={"serial": ""})),
    ("negative capacity", "implausible_value", inventory("n1", NOW, battery={"capacity_wh": -1})),
    ("huge power", "implausible_value", inventory("n1", NOW, battery={"max_charge_w": 1e12})),
    ("another node's id", "node_id_mismatch", inventory("n2", NOW)),
    ("from the future", "timestamp_in_future", inventory("n1", NOW + timedelta(hours=1))),
    # Stored as 1 BC, which no read of the row survives (GET /nodes answered 500).
    ("before year 1 in UTC", "schema_violation", inventory("n1", YEAR_ONE_EAST)),
    ("oversize", "payload_too_large", inventory("n1", NOW, padding="x" * MAX_INVENTORY_BYTES)),
]


@pytest.mark.parametrize(("case", "reason", "body"), HOSTILE, ids=[case for case, _, _ in HOSTILE])
def test_a_hostile_inventory_is_refused_with_its_reason(case, reason, body):
    assert _decode("n1", body)[0] == reason


def test_a_valid_inventory_decodes():
    assert _decode("n1", inventory("n1", NOW)) == (None, "")
    minimal = inventory("n1", NOW, battery=None, meter=None)
    assert _decode("n1", minimal) == (None, "")


def test_changes_name_each_path_that_differs():
    before = {"inverter": {"firmware": "1.0", "serial": "A"}, "battery": None}
    after = {"inverter": {"firmware": "1.1", "serial": "A"}, "battery": {"capacity_wh": 5.0}}
    assert changes(before, after) == {
        "battery.capacity_wh": {"from": None, "to": 5.0},
        "inverter.firmware": {"from": "1.0", "to": "1.1"},
    }
    assert changes(after, after) == {}


def _history(database, node_id: str) -> list[tuple[Any, ...]]:
    with database.connect() as conn:
        rows: list[tuple[Any, ...]] = conn.execute(
            "SELECT changed_at, changes FROM node_inventory_history WHERE node_id = %s"
            " ORDER BY changed_at",
            (node_id,),
        ).fetchall()
    return rows


def _current(database, node_id: str) -> tuple[Any, ...] | None:
    with database.connect() as conn:
        row: tuple[Any, ...] | None = conn.execute(
            "SELECT reported_at, model, firmware, serial, battery_capacity_wh,"
            " meter_sunspec_model, agent_version FROM node_inventory WHERE node_id = %s",
            (node_id,),
        ).fetchone()
    return row


@pytest.mark.integration
def test_current_inventory_and_its_history(database, broker, collector_factory):
    tenant = create_tenant(database)
    (node,) = enroll(database, broker, tenant)
    collector_factory().start()
    client = mqtt_client(broker, node.id, node.password)
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    topic = topics.inventory(node.id)

    publish_json(client, topic, inventory(node.id, t0))
    wait_rows(database, 1, "SELECT count(*) FROM node_inventory WHERE node_id = %s", (node.id,))
    # The same report again (a retained redelivery), then the same content read later.
    publish_json(client, topic, inventory(node.id, t0))
    publish_json(client, topic, inventory(node.id, t0 + timedelta(minutes=1)))
    wait_for(
        lambda: (_current(database, node.id) or [None])[0] == t0 + timedelta(minutes=1),
        20,
        "the later equal report",
    )
    assert len(_history(database, node.id)) == 1
    # A firmware update, then a late report from before it.
    publish_json(client, topic, inventory(node.id, t0 + timedelta(minutes=5), firmware="1.1.0"))
    publish_json(client, topic, inventory(node.id, t0 + timedelta(minutes=2)))
    wait_rows(
        database, 2, "SELECT count(*) FROM node_inventory_history WHERE node_id = %s", (node.id,)
    )

    first, update = _history(database, node.id)
    assert first[0] == t0
    assert first[1]["inverter.firmware"] == {"from": None, "to": "1.0.0"}
    assert first[1]["battery.capacity_wh"] == {"from": None, "to": 10000.0}
    assert update == (
        t0 + timedelta(minutes=5),
        {"inverter.firmware": {"from": "1.0.0", "to": "1.1.0"}},
    )
    assert _current(database, node.id) == (
        t0 + timedelta(minutes=5),
        "simulated hybrid",
        "1.1.0",
        "SIM-000007",
        10000.0,
        203,
        "1.2.3",
    )


@pytest.mark.integration
def test_hostile_inventories_are_dead_letters_and_ingest_goes_on(
    database, broker, collector_factory
):
    tenant = create_tenant(database)
    node, other = enroll(database, broker, tenant, count=2)
    collector_factory().start()
    client = mqtt_client(broker, node.id, node.password)
    now = datetime.now(UTC)
    bodies: list[bytes | str] = [
        b"{not json",
        json.dumps(inventory(node.id, now, battery={"capacity_wh": "lots"})),
        json.dumps(inventory(node.id, now, firmware="\x07beep")),
        json.dumps(inventory(node.id, now, battery={"capacity_wh": 1e12})),
        json.dumps(inventory(other.id, now)),
        json.dumps(inventory(node.id, now, padding="x" * MAX_INVENTORY_BYTES)),
        json.dumps(inventory(node.id, YEAR_ONE_EAST)),
    ]
    publish_all(client, [(topics.inventory(node.id), body) for body in bodies])
    # Another node's topic: the broker refuses the publish itself.
    forged = client.publish(topics.inventory(other.id), json.dumps(inventory(other.id, now)), qos=1)
    forged.wait_for_publish(10)
    # Ingest goes on: a good inventory after all of that is stored.
    publish_json(client, topics.inventory(node.id), inventory(node.id, now))

    wait_rows(database, 1, "SELECT count(*) FROM node_inventory WHERE node_id = %s", (node.id,))
    wait_for(lambda: len(dead_letters(database, node.id)) == len(bodies), 20, "dead letters")
    assert [r[0] for r in dead_letters(database, node.id)] == [
        "invalid_json",
        "schema_violation",
        "schema_violation",
        "implausible_value",
        "node_id_mismatch",
        "payload_too_large",
        "schema_violation",
    ]
    assert "printable" in dead_letters(database, node.id)[2][1]
    assert "the node's clock is wrong" in dead_letters(database, node.id)[6][1]
    assert (
        count_rows(database, "SELECT count(*) FROM node_inventory WHERE node_id = %s", (other.id,))
        == 0
    )


@pytest.mark.integration
def test_a_node_flooding_changes_keeps_only_its_newest_history(database, broker, collector_factory):
    tenant = create_tenant(database)
    node, quiet = enroll(database, broker, tenant, count=2)
    collector = collector_factory().start()
    start = datetime.now(UTC) - timedelta(hours=1)
    publish_json(
        mqtt_client(broker, quiet.id, quiet.password),
        topics.inventory(quiet.id),
        inventory(quiet.id, start),
    )
    # A flapping (or hostile) node: every report changes the firmware.
    flood = MAX_HISTORY_ROWS_PER_NODE + 5
    reports = [
        (
            topics.inventory(node.id),
            json.dumps(inventory(node.id, start + timedelta(seconds=i), firmware=f"1.{i}")),
        )
        for i in range(flood)
    ]
    publish_all(mqtt_client(broker, node.id, node.password), reports)

    query = "SELECT count(*) FROM node_inventory_history WHERE node_id = %s"
    wait_for(
        lambda: (_current(database, node.id) or [None, None, None])[2] == f"1.{flood - 1}",
        60,
        "the last report stored",
    )
    assert count_rows(database, query, (node.id,)) == MAX_HISTORY_ROWS_PER_NODE
    # The newest kept, the oldest gone; another node's history untouched.
    kept = _history(database, node.id)
    assert kept[0][0] == start + timedelta(seconds=5)
    assert kept[-1][1] == {"inverter.firmware": {"from": f"1.{flood - 2}", "to": f"1.{flood - 1}"}}
    assert count_rows(database, query, (quiet.id,)) == 1
    metrics = scrape(collector.metrics_port)
    assert metrics["wattfleet_collector_inventory_history_pruned_total"] == 5


@pytest.mark.integration
def test_a_change_sent_after_the_nodes_clock_stepped_back_is_stored(
    database, broker, collector_factory
):
    tenant = create_tenant(database)
    (node,) = enroll(database, broker, tenant)
    collector_factory().start()
    client = mqtt_client(broker, node.id, node.password)
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    topic = topics.inventory(node.id)
    stepped = t0 - timedelta(minutes=30)

    def send(*bodies: dict[str, Any]) -> None:
        publish_all(client, [(topic, json.dumps(body)) for body in bodies])

    send(inventory(node.id, t0), inventory(node.id, t0 + timedelta(minutes=5), firmware="1.0.1"))
    wait_rows(
        database, 2, "SELECT count(*) FROM node_inventory_history WHERE node_id = %s", (node.id,)
    )
    send(
        # The clock stepped back (a Pi restoring a saved time), then a firmware update.
        inventory(node.id, stepped, firmware="1.1.0"),
        # Late copies of reports from before the step: two stored already, and one never
        # stored (queued for a collector that was away), whose content the node had then.
        inventory(node.id, t0),
        inventory(node.id, t0 + timedelta(minutes=5), firmware="1.0.1"),
        inventory(node.id, t0 + timedelta(minutes=2)),
        # The current content, read earlier still: nothing to do.
        inventory(node.id, stepped - timedelta(minutes=10), firmware="1.1.0"),
        # The agent updated: the last report, to wait for.
        inventory(
            node.id, stepped + timedelta(minutes=1), firmware="1.1.0", agent={"version": "1.2.4"}
        ),
    )
    wait_for(lambda: (_current(database, node.id) or [None])[-1] == "1.2.4", 20, "the last report")

    assert _current(database, node.id) == (
        stepped + timedelta(minutes=1),
        "simulated hybrid",
        "1.1.0",
        "SIM-000007",
        10000.0,
        203,
        "1.2.4",
    )
    # By the node's clock, as stored.
    update, agent, first, second = _history(database, node.id)
    assert first[0] == t0
    assert second == (
        t0 + timedelta(minutes=5),
        {"inverter.firmware": {"from": "1.0.0", "to": "1.0.1"}},
    )
    assert update == (stepped, {"inverter.firmware": {"from": "1.0.1", "to": "1.1.0"}})
    assert agent == (
        stepped + timedelta(minutes=1),
        {"agent.version": {"from": "1.2.3", "to": "1.2.4"}},
    )
