"""Every bad-input class ends in dead_letters with its reason; ingest goes on."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from contract import topics
from tests.support.fleet import (
    count_rows,
    create_tenant,
    dead_letters,
    dynsec,
    enroll,
    mqtt_client,
    publish_all,
    publish_json,
    sample,
    scrape,
    stored_seqs,
    unique,
    wait_rows,
)
from tests.support.proxy import proxy_for_database
from tests.support.services import wait_for

pytestmark = pytest.mark.integration


def test_each_bad_input_class_is_quarantined_with_its_reason(database, broker, collector_factory):
    tenant = create_tenant(database)
    node, other = enroll(database, broker, tenant, count=2)
    (disabled,) = enroll(database, broker, tenant, enabled=False)
    ghost = unique("ghost")  # has broker credentials, but no row in nodes
    with dynsec(broker) as admin:
        admin.add_node(ghost, "ghost-password")
    collector = collector_factory(max_payload_bytes="2048").start()
    now = datetime.now(UTC)
    topic = topics.telemetry(node.id)

    cases: list[tuple[str, bytes | str]] = [
        ("invalid_json", b"{not json"),
        ("invalid_json", b'\xff\xfe{"node_id": 1}'),
        (
            "schema_violation",
            json.dumps({"node_id": node.id, "timestamp": now.isoformat(), "seq": 1}),
        ),
        ("schema_violation", json.dumps(sample(node.id, 2, timestamp="yesterday"))),
        ("payload_too_large", json.dumps(sample(node.id, 3, padding="x" * 4000))),
        ("node_id_mismatch", json.dumps(sample(other.id, 4))),
        ("timestamp_in_future", json.dumps(sample(node.id, 5, now + timedelta(hours=1)))),
        ("timestamp_too_old", json.dumps(sample(node.id, 6, now - timedelta(days=40)))),
        ("implausible_value", json.dumps(sample(node.id, 7, battery={"soc_percent": 150}))),
        (
            "implausible_value",
            json.dumps(sample(node.id, 8, battery={"soc_percent": 50, "voltage": -5})),
        ),
        ("implausible_value", json.dumps(sample(node.id, 9, solar={"power_w": 1e9}))),
    ]
    client = mqtt_client(broker, node.id, node.password)
    publish_all(client, [(topic, payload) for _, payload in cases])
    for principal, _reason in ((disabled, "disabled_node"), (None, "unknown_node")):
        node_id = principal.id if principal else ghost
        c = mqtt_client(broker, node_id, principal.password if principal else "ghost-password")
        publish_json(c, topics.telemetry(node_id), sample(node_id, 1))
    # The collector is still ingesting after all of that.
    publish_json(client, topic, sample(node.id, 100))

    wait_rows(database, 1, "SELECT count(*) FROM telemetry WHERE node_id = %s", (node.id,))
    wait_for(lambda: len(dead_letters(database, node.id)) == len(cases), 20, "dead letters")
    got = dead_letters(database, node.id)
    assert [r[0] for r in got] == [reason for reason, _ in cases]
    assert got[4][2].startswith(b'{"node_id"')
    assert len(got[4][2]) == 4096
    assert got[1][2] == cases[1][1]
    assert "battery.soc_percent" in got[8][1]
    assert [r[0] for r in dead_letters(database, disabled.id)] == ["disabled_node"]
    wait_for(lambda: len(dead_letters(database, ghost)) == 1, 10, "ghost dead letter")
    assert dead_letters(database, ghost)[0][0] == "unknown_node"
    assert (
        count_rows(
            database,
            "SELECT count(*) FROM telemetry WHERE node_id = ANY(%s)",
            ([disabled.id, ghost],),
        )
        == 0
    )
    metrics = scrape(collector.metrics_port)
    assert metrics["wattfleet_collector_dead_letters_total{reason=implausible_value}"] == 3
    assert metrics["wattfleet_collector_dead_letters_total{reason=invalid_json}"] == 2


def test_one_bad_sample_in_a_replay_batch_spares_its_siblings(database, broker, collector_factory):
    tenant = create_tenant(database)
    (node,) = enroll(database, broker, tenant)
    collector_factory().start()
    start = datetime.now(UTC) - timedelta(hours=2)
    batch = [sample(node.id, i, start + timedelta(seconds=5 * i)) for i in range(10)]
    batch[4]["battery"]["soc_percent"] = -1
    batch[7] = {"node_id": node.id, "seq": 7}
    client = mqtt_client(broker, node.id, node.password)
    publish_json(client, topics.telemetry(node.id), {"samples": batch})

    wait_rows(database, 8, "SELECT count(*) FROM telemetry WHERE node_id = %s", (node.id,))
    wait_for(lambda: len(dead_letters(database, node.id)) == 2, 10, "two dead letters")
    reasons = sorted(r[0] for r in dead_letters(database, node.id))
    assert reasons == ["implausible_value", "schema_violation"]
    assert stored_seqs(database, node.id) == [0, 1, 2, 3, 5, 6, 8, 9]


def test_node_cannot_use_another_nodes_topics(database, broker, collector_factory):
    tenant = create_tenant(database)
    a, b = enroll(database, broker, tenant, count=2)
    collector_factory().start()
    client = mqtt_client(broker, a.id, a.password)
    outcomes: dict[int | None, Any] = {}
    client.on_publish = lambda _c, _u, mid, reason, _p: outcomes.__setitem__(mid, reason)
    subacks: dict[int | None, Any] = {}
    client.on_subscribe = lambda _c, _u, mid, reasons, _p: subacks.__setitem__(mid, reasons)

    own = client.publish(topics.telemetry(a.id), json.dumps(sample(a.id, 1)), qos=1)
    forged = [
        client.publish(topics.node_topic(b.id, kind), json.dumps(sample(b.id, 1)), qos=1)
        for kind in ("telemetry", "status", "acks", "logs", "commands")
    ]
    _, own_sub = client.subscribe(topics.commands(a.id), qos=1)
    _, foreign_sub = client.subscribe(topics.commands(b.id), qos=1)
    _, wildcard_sub = client.subscribe("nodes/#", qos=1)
    wait_for(lambda: len(outcomes) == 6 and len(subacks) == 3, 10, "PUBACKs and SUBACKs")

    assert not outcomes[own.mid].is_failure
    assert all(outcomes[info.mid].is_failure for info in forged)
    assert not subacks[own_sub][0].is_failure
    assert subacks[foreign_sub][0].is_failure
    assert subacks[wildcard_sub][0].is_failure
    wait_rows(database, 1, "SELECT count(*) FROM telemetry WHERE node_id = %s", (a.id,))
    assert count_rows(database, "SELECT count(*) FROM telemetry WHERE node_id = %s", (b.id,)) == 0


def test_status_messages_become_node_events(database, broker, collector_factory):
    tenant = create_tenant(database)
    (node,) = enroll(database, broker, tenant)
    collector_factory().start()
    online_at = datetime.now(UTC).replace(microsecond=0)
    client = mqtt_client(broker, node.id, node.password)
    publish_json(
        client,
        topics.status(node.id),
        {
            "state": "online",
            "ts": online_at.isoformat(),
            "agent_version": "1.2.3",
            "buffer_depth": 7,
            "oldest_unconfirmed_age_s": 30,
        },
    )
    publish_json(
        client,
        topics.status(node.id),
        {"state": "offline", "ts": (online_at + timedelta(seconds=5)).isoformat()},
    )

    wait_rows(database, 2, "SELECT count(*) FROM node_events WHERE node_id = %s", (node.id,))
    with database.connect() as conn:
        events = conn.execute(
            "SELECT ts, state, source, detail->>'agent_version' FROM node_events"
            " WHERE node_id = %s ORDER BY ts",
            (node.id,),
        ).fetchall()
        status = conn.execute(
            "SELECT state, agent_version, buffer_depth, oldest_unconfirmed_age_s"
            " FROM node_status WHERE node_id = %s",
            (node.id,),
        ).fetchone()
    assert events == [
        (online_at, "online", "status", "1.2.3"),
        (online_at + timedelta(seconds=5), "offline", "status", None),
    ]
    # The offline status (no backlog in it) keeps the heartbeat's backlog.
    assert status == ("offline", "1.2.3", 7, 30)


def test_database_outage_loses_nothing(database, broker, collector_factory):
    tenant = create_tenant(database)
    (node,) = enroll(database, broker, tenant)
    proxy, url = proxy_for_database(database.url)
    try:
        collector = collector_factory(database_url=url, db_retry_max_s="1").start()
        client = mqtt_client(broker, node.id, node.password)
        start = datetime.now(UTC) - timedelta(minutes=30)
        msgs = [
            (
                topics.telemetry(node.id),
                json.dumps(sample(node.id, i, start + timedelta(seconds=i))),
            )
            for i in range(200)
        ]
        publish_all(client, msgs[:100])
        wait_rows(database, 100, "SELECT count(*) FROM telemetry WHERE node_id = %s", (node.id,))

        proxy.cut()
        publish_all(client, msgs[100:])
        wait_for(
            lambda: (
                scrape(collector.metrics_port).get("wattfleet_collector_commit_failures_total", 0)
                > 0
            ),
            20,
            "failed commits",
        )
        metrics = scrape(collector.metrics_port)
        assert metrics["wattfleet_collector_database_up"] == 0
        assert (
            count_rows(database, "SELECT count(*) FROM telemetry WHERE node_id = %s", (node.id,))
            == 100
        )

        proxy.restore()
        wait_rows(database, 200, "SELECT count(*) FROM telemetry WHERE node_id = %s", (node.id,))
        wait_for(
            lambda: scrape(collector.metrics_port)["wattfleet_collector_database_up"] == 1,
            10,
            "database_up back to 1",
        )
        assert collector.log().count("database write failed") >= 1
        assert collector.log().count("ERROR collector.committer database write failed") == 1
        assert collector.stop() == 0
    finally:
        proxy.close()


def test_unknown_secret_is_refused_by_the_broker(broker):
    with pytest.raises(ConnectionRefusedError):
        mqtt_client(broker, "collector", secrets.token_hex(8))
    with pytest.raises(ConnectionRefusedError):
        mqtt_client(broker, "", "")


def test_data_the_database_refuses_is_quarantined_alone(database, broker, collector_factory):
    """A NUL character passes JSON and schema validation, but PostgreSQL text refuses it."""
    tenant = create_tenant(database)
    (node,) = enroll(database, broker, tenant)
    collector = collector_factory().start()
    start = datetime.now(UTC) - timedelta(minutes=5)
    poison = sample(node.id, 1, start + timedelta(seconds=5))
    poison["grid"]["mode"] = "AUTO\u0000"
    client = mqtt_client(broker, node.id, node.password)
    publish_all(
        client,
        [
            (topics.telemetry(node.id), json.dumps(sample(node.id, 0, start))),
            (topics.telemetry(node.id), json.dumps(poison)),
            (
                topics.telemetry(node.id),
                json.dumps(sample(node.id, 2, start + timedelta(seconds=10))),
            ),
        ],
    )

    wait_rows(database, 2, "SELECT count(*) FROM telemetry WHERE node_id = %s", (node.id,))
    wait_for(lambda: len(dead_letters(database, node.id)) == 1, 10, "one dead letter")
    ((reason, detail, payload),) = dead_letters(database, node.id)
    assert reason == "rejected_by_database"
    assert "0x00" in detail
    assert json.loads(payload)["seq"] == 1
    publish_json(client, topics.telemetry(node.id), sample(node.id, 3))
    wait_rows(database, 3, "SELECT count(*) FROM telemetry WHERE node_id = %s", (node.id,))
    metrics = scrape(collector.metrics_port)
    assert metrics["wattfleet_collector_dead_letters_total{reason=rejected_by_database}"] == 1
    assert metrics.get("wattfleet_collector_commit_failures_total", 0) == 0
