"""The collector against a real Mosquitto and a real TimescaleDB: what arrives, once."""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import UTC, datetime, timedelta

import pytest

from contract import topics
from tests.support.fleet import (
    count_rows,
    create_tenant,
    enroll,
    mqtt_client,
    publish_all,
    publish_json,
    sample,
    scrape,
    wait_rows,
)
from tests.support.services import wait_for

pytestmark = pytest.mark.integration


def test_sample_arrives_with_every_field(database, broker, collector_factory):
    tenant = create_tenant(database)
    (node,) = enroll(database, broker, tenant)
    collector = collector_factory().start()
    client = mqtt_client(broker, node.id, node.password)
    ts = (datetime.now(UTC) - timedelta(seconds=2)).replace(microsecond=123000)
    publish_json(client, topics.telemetry(node.id), sample(node.id, 7, ts))

    wait_rows(database, 1, "SELECT count(*) FROM telemetry WHERE node_id = %s", (node.id,))
    with database.connect() as conn:
        row = conn.execute(
            "SELECT ts, tenant_id, seq, soc_percent, battery_voltage_mv, battery_w,"
            " solar_w, grid_w, load_w, grid_price, grid_mode, received_at"
            " FROM telemetry WHERE node_id = %s",
            (node.id,),
        ).fetchone()
        status = conn.execute(
            "SELECT last_seen_at, last_seq, clock_drift_s FROM node_status WHERE node_id = %s",
            (node.id,),
        ).fetchone()
        decision = conn.execute(
            "SELECT ts, decision, grid_mode, daily_savings, daily_cost"
            " FROM optimizer_decisions WHERE node_id = %s",
            (node.id,),
        ).fetchall()
    assert row[:11] == (
        ts,
        tenant,
        7,
        57.0,
        52100,  # mV
        -300,  # whole watts
        1500,
        200,
        1400,
        0.55,
        "SELF_CONSUMPTION",
    )
    assert row[11] >= ts
    assert status[0] == row[11]
    assert status[1] == 7
    assert 0 <= status[2] < 5
    assert decision == [(ts, "charge from PV", "SELF_CONSUMPTION", 1.5, 0.4)]
    metrics = scrape(collector.metrics_port)
    assert metrics["wattfleet_collector_samples_written_total"] == 1


def _stream(nodes, per_node, start=None, replay_every=0):
    """Messages for every node: single samples, and every `replay_every`-th message a
    `{"samples": [...]}` replay of three. Returns ({node_id: messages}, total samples)."""
    start = start or datetime.now(UTC) - timedelta(hours=1)
    out, total = {}, 0
    for node in nodes:
        msgs: list[tuple[str, str]] = []
        seq = 0
        while seq < per_node:
            if replay_every and len(msgs) % replay_every == replay_every - 1:
                batch = [
                    sample(node.id, s, start + timedelta(seconds=s))
                    for s in range(seq, min(seq + 3, per_node))
                ]
                msgs.append((topics.telemetry(node.id), json.dumps({"samples": batch})))
                seq += len(batch)
            else:
                msgs.append(
                    (
                        topics.telemetry(node.id),
                        json.dumps(sample(node.id, seq, start + timedelta(seconds=seq))),
                    )
                )
                seq += 1
        out[node.id] = msgs
        total += per_node
    return out, total


def _publish_streams(broker, nodes, streams):
    for node in nodes:
        client = mqtt_client(broker, node.id, node.password)
        publish_all(client, streams[node.id])
        client.disconnect()
        client.loop_stop()


def _tenant_rows(database, tenant):
    return count_rows(database, "SELECT count(*) FROM telemetry WHERE tenant_id = %s", (tenant,))


def test_n_samples_from_m_nodes_give_exactly_n_rows(database, broker, collector_factory):
    tenant = create_tenant(database)
    nodes = enroll(database, broker, tenant, count=5)
    collector = collector_factory().start()
    streams, total = _stream(nodes, 200, replay_every=10)
    _publish_streams(broker, nodes, streams)

    wait_rows(database, total, "SELECT count(*) FROM telemetry WHERE tenant_id = %s", (tenant,))
    with database.connect() as conn:
        per_node = dict(
            conn.execute(
                "SELECT node_id, count(DISTINCT seq) FROM telemetry WHERE tenant_id = %s"
                " GROUP BY node_id",
                (tenant,),
            ).fetchall()
        )
        last_seq = dict(
            conn.execute(
                "SELECT s.node_id, s.last_seq FROM node_status s JOIN nodes n ON n.id = s.node_id"
                " WHERE n.tenant_id = %s",
                (tenant,),
            ).fetchall()
        )
    assert per_node == {n.id: 200 for n in nodes}
    assert last_seq == {n.id: 199 for n in nodes}
    wait_for(
        lambda: (
            scrape(collector.metrics_port)["wattfleet_collector_samples_written_total"] == total
        ),
        10,
        "written counter",
    )
    assert _tenant_rows(database, tenant) == total


def test_collector_killed_mid_stream_loses_and_duplicates_nothing(
    database, broker, collector_factory
):
    tenant = create_tenant(database)
    nodes = enroll(database, broker, tenant, count=4)
    client_id = "collector-stable"
    # Small batches, so the kill lands between commits with acks outstanding.
    collector = collector_factory(client_id=client_id, batch_max_messages="50").start()
    streams, total = _stream(nodes, 500, replay_every=7)
    _publish_streams(broker, nodes, streams)
    wait_for(lambda: _tenant_rows(database, tenant) > 0, 20, "first rows")
    writer = collector.writer_pid()
    collector.kill()
    assert _tenant_rows(database, tenant) < total, "killed too late to prove anything"
    # Its batch writer process goes with it (it may finish the batch in hand first).
    wait_for(lambda: not os.path.exists(f"/proc/{writer}"), 10, "the writer process to exit")

    restarted = collector_factory(client_id=client_id).start()
    wait_rows(database, total, "SELECT count(*) FROM telemetry WHERE tenant_id = %s", (tenant,))
    assert (
        count_rows(
            database,
            "SELECT count(*) FROM (SELECT DISTINCT node_id, seq FROM telemetry"
            " WHERE tenant_id = %s) d",
            (tenant,),
        )
        == total
    )
    assert restarted.stop() == 0


def test_a_killed_writer_process_is_replaced_and_nothing_is_lost(
    database, broker, collector_factory
):
    tenant = create_tenant(database)
    nodes = enroll(database, broker, tenant, count=4)
    collector = collector_factory(batch_max_messages="50").start()
    streams, total = _stream(nodes, 500, replay_every=7)
    _publish_streams(broker, nodes, streams)
    wait_for(lambda: _tenant_rows(database, tenant) > 0, 20, "first rows")
    writer = collector.writer_pid()
    os.kill(writer, signal.SIGKILL)
    assert _tenant_rows(database, tenant) < total, "killed too late to prove anything"

    wait_rows(database, total, "SELECT count(*) FROM telemetry WHERE tenant_id = %s", (tenant,))
    distinct = count_rows(
        database,
        "SELECT count(*) FROM (SELECT DISTINCT node_id, seq FROM telemetry WHERE tenant_id = %s) d",
        (tenant,),
    )
    assert distinct == total
    assert collector.writer_pid() != writer
    assert "the batch writer process died (exit code -9); starting another" in collector.log()
    assert scrape(collector.metrics_port)["wattfleet_collector_commit_failures_total"] >= 1
    assert collector.stop() == 0


def test_two_collectors_share_the_stream_exactly_once(database, broker, collector_factory):
    tenant = create_tenant(database)
    nodes = enroll(database, broker, tenant, count=6)
    first = collector_factory(batch_max_messages="20").start()
    second = collector_factory(batch_max_messages="20").start()
    streams, total = _stream(nodes, 150, replay_every=5)
    _publish_streams(broker, nodes, streams)

    wait_rows(database, total, "SELECT count(*) FROM telemetry WHERE tenant_id = %s", (tenant,))
    key = "wattfleet_collector_messages_received_total{kind=telemetry}"
    received = [scrape(c.metrics_port).get(key, 0) for c in (first, second)]
    assert all(r > 0 for r in received), f"one collector got nothing: {received}"
    assert sum(received) == sum(len(m) for m in streams.values())


def _assert_nothing_redelivered(database, broker, collector_factory, client_id, node, stored):
    """Everything was acknowledged: a collector restarted under the same session gets
    only the one new message published after it is back."""
    again = collector_factory(client_id=client_id).start()
    wait_for(
        lambda: scrape(again.metrics_port).get("wattfleet_collector_broker_connected") == 1,
        10,
        "reconnect",
    )
    client = mqtt_client(broker, node.id, node.password)
    publish_json(client, topics.telemetry(node.id), sample(node.id, 10_000))
    wait_rows(
        database,
        stored + 1,
        "SELECT count(*) FROM telemetry WHERE tenant_id = %s",
        (node.tenant_id,),
    )
    key = "wattfleet_collector_messages_received_total{kind=telemetry}"
    assert scrape(again.metrics_port)[key] == 1, "committed messages were redelivered"


def test_sigterm_flushes_acknowledges_and_exits_zero(database, broker, collector_factory):
    tenant = create_tenant(database)
    nodes = enroll(database, broker, tenant, count=2)
    client_id = "collector-graceful"
    # Long batch window: at SIGTERM, messages are still waiting in memory.
    collector = collector_factory(
        client_id=client_id, batch_max_seconds="30", batch_max_messages="100000"
    ).start()
    streams, total = _stream(nodes, 100)
    _publish_streams(broker, nodes, streams)
    key = "wattfleet_collector_messages_received_total{kind=telemetry}"
    wait_for(lambda: scrape(collector.metrics_port).get(key) == total, 20, "all received")
    assert _tenant_rows(database, tenant) == 0

    assert collector.stop() == 0
    assert _tenant_rows(database, tenant) == total
    _assert_nothing_redelivered(database, broker, collector_factory, client_id, nodes[0], total)


def test_a_quiet_stream_is_still_acknowledged_after_its_commit(database, broker, collector_factory):
    """The network thread acknowledges committed batches as the next message arrives;
    when none comes, the writer must do it, or a crash would redeliver them all."""
    tenant = create_tenant(database)
    nodes = enroll(database, broker, tenant, count=2)
    client_id = "collector-quiet"
    collector = collector_factory(client_id=client_id, batch_max_seconds="0.2").start()
    streams, total = _stream(nodes, 20)
    _publish_streams(broker, nodes, streams)
    wait_rows(database, total, "SELECT count(*) FROM telemetry WHERE tenant_id = %s", (tenant,))
    time.sleep(0.5)  # the stream is quiet now: no message will carry the acks
    collector.kill()
    _assert_nothing_redelivered(database, broker, collector_factory, client_id, nodes[0], total)


def test_optimizer_decisions_are_stored_only_when_they_change(database, broker, collector_factory):
    tenant = create_tenant(database)
    (node,) = enroll(database, broker, tenant)
    collector_factory().start()
    start = datetime.now(UTC) - timedelta(minutes=10)
    # (decision, reason): the second "charge" comes with a new reason, a new plan.
    decisions = [
        ("hold", None),
        ("hold", None),
        ("charge", "cheap hour"),
        ("charge", "cheap hour"),
        ("charge", "SOC below 40 %"),
        ("hold", None),
    ]

    def message(seq):
        body = sample(node.id, seq, start + timedelta(seconds=5 * seq))
        decision, reason = decisions[seq]
        body["optimizer"] = {"latest_decision": decision, "mode": decision, "reason": reason}
        return body

    client = mqtt_client(broker, node.id, node.password)
    publish_json(client, topics.telemetry(node.id), message(0))
    wait_rows(database, 1, "SELECT count(*) FROM telemetry WHERE node_id = %s", (node.id,))
    # The rest as one replay, then all of it again as a redelivery would.
    replay = {"samples": [message(seq) for seq in range(1, 6)]}
    publish_json(client, topics.telemetry(node.id), replay)
    wait_rows(database, 6, "SELECT count(*) FROM telemetry WHERE node_id = %s", (node.id,))
    publish_json(client, topics.telemetry(node.id), {"samples": [message(s) for s in range(6)]})
    publish_json(client, topics.telemetry(node.id), sample(node.id, 99))
    wait_rows(database, 7, "SELECT count(*) FROM telemetry WHERE node_id = %s", (node.id,))

    with database.connect() as conn:
        stored = conn.execute(
            "SELECT ts, decision, reason FROM optimizer_decisions WHERE node_id = %s ORDER BY ts",
            (node.id,),
        ).fetchall()
    assert [(d, r) for _, d, r in stored] == [
        ("hold", None),
        ("charge", "cheap hour"),
        ("charge", "SOC below 40 %"),
        ("hold", None),
        ("charge from PV", None),
    ]
    assert [t for t, _, _ in stored[:4]] == [start + timedelta(seconds=s) for s in (0, 10, 20, 25)]


def test_node_status_keeps_the_newest_sample_whatever_order_samples_arrive_in(
    database, broker, collector_factory
):
    """The "now" values (node_status, migration 0015) follow the newest sample: a replay
    of older ones arriving later leaves them alone."""
    tenant = create_tenant(database)
    (node,) = enroll(database, broker, tenant)
    collector_factory().start()
    now = datetime.now(UTC).replace(microsecond=0)
    client = mqtt_client(broker, node.id, node.password)

    def latest():
        with database.connect() as conn:
            return conn.execute(
                "SELECT latest_ts, soc_percent, solar_power_w, grid_mode FROM node_status"
                " WHERE node_id = %s",
                (node.id,),
            ).fetchone()

    live = sample(node.id, 50, now, solar={"power_w": 4321.0})
    publish_json(client, topics.telemetry(node.id), live)
    wait_for(lambda: latest() is not None and latest()[0] is not None, 10, "the live sample")
    older = [sample(node.id, s, now - timedelta(minutes=10 - s)) for s in range(5)]
    publish_json(client, topics.telemetry(node.id), {"samples": older})
    wait_rows(database, 6, "SELECT count(*) FROM telemetry WHERE node_id = %s", (node.id,))
    assert latest() == (now, 50.0 + 50 % 50, 4321.0, "SELF_CONSUMPTION")
    newer = sample(node.id, 51, now + timedelta(seconds=5), solar={"power_w": 99.0})
    publish_json(client, topics.telemetry(node.id), newer)
    wait_for(lambda: latest()[0] == now + timedelta(seconds=5), 10, "the newer sample")
    assert latest()[1:] == (51.0, 99.0, "SELF_CONSUMPTION")
