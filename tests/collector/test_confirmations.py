"""The collector confirming committed samples to their nodes (nodes/<id>/ingested), read
by each node's own account on a real broker, against what the real database holds."""

from __future__ import annotations

import json
import os
import signal
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from paho.mqtt.client import Client

from contract import topics
from contract.confirmations import INGEST_CONFIRMATION, seq_ranges
from tests.support.fleet import (
    Node,
    count_rows,
    create_tenant,
    dead_letters,
    enroll,
    mqtt_client,
    publish_all,
    sample,
    scrape,
    stored_seqs,
    wait_rows,
)
from tests.support.proxy import proxy_for_database
from tests.support.services import Database, wait_for

pytestmark = pytest.mark.integration


class NodeInbox:
    """Node X's own connection: publishes its samples and records each confirmation it
    receives, validated against the contract. With `database`, checks at receipt that
    every seq confirmed is stored or dead-lettered already (`unstored` lists any not)."""

    def __init__(self, broker: Any, node: Node, database: Database | None = None) -> None:
        self.node = node
        self.client: Client = mqtt_client(broker, node.id, node.password)
        self.received: list[list[tuple[int, int]]] = []
        self.unstored: list[int] = []
        self._lock = threading.Lock()
        self._conn = None if database is None else database.connect()
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        self.client.subscribe(topics.ingested(node.id), qos=1)
        assert subscribed.wait(10)

    def _on_message(self, _client: Client, _userdata: object, msg: Any) -> None:
        ranges = [tuple(r) for r in INGEST_CONFIRMATION.validate_json(msg.payload)["seqs"]]
        if self._conn is not None:
            seqs = [s for first, last in ranges for s in range(first, last + 1)]
            stored = {
                row[0]
                for row in self._conn.execute(
                    "SELECT seq FROM telemetry WHERE node_id = %s AND seq = ANY(%s)",
                    (self.node.id, seqs),
                )
            }
            with self._lock:
                self.unstored += [s for s in seqs if s not in stored]
        with self._lock:
            self.received.append(ranges)  # type: ignore[arg-type]

    def confirmed(self) -> list[int]:
        """Every seq confirmed so far, in the order confirmed (repeats kept)."""
        with self._lock:
            return [s for ranges in self.received for a, b in ranges for s in range(a, b + 1)]

    def publish(self, bodies: list[Any]) -> None:
        topic = topics.telemetry(self.node.id)
        publish_all(
            self.client,
            [(topic, b if isinstance(b, bytes | str) else json.dumps(b)) for b in bodies],
        )

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        if self._conn is not None:
            self._conn.close()


def test_one_confirmation_per_node_per_batch_names_exactly_thestored_seqs(
    database, broker, collector_factory
):
    tenant = create_tenant(database)
    nodes = enroll(database, broker, tenant, count=3)
    start = datetime.now(UTC) - timedelta(minutes=30)
    at = [start + timedelta(seconds=5 * i) for i in range(40)]
    sent = {
        # Singles, then a replay batch: one run.
        nodes[0].id: [0, 1, 2, 3, 4, 5],
        # A gap: two runs.
        nodes[1].id: [10, 11, 12, 20, 21],
        nodes[2].id: [7],
    }
    messages: dict[str, list[Any]] = {
        nodes[0].id: [sample(nodes[0].id, s, at[s]) for s in range(3)]
        + [{"samples": [sample(nodes[0].id, s, at[s]) for s in range(3, 6)]}],
        nodes[1].id: [sample(nodes[1].id, s, at[s]) for s in sent[nodes[1].id]],
        nodes[2].id: [sample(nodes[2].id, 7, at[7])],
    }
    total_messages = sum(len(m) for m in messages.values())
    # One batch: it is cut when the last message arrives.
    collector = collector_factory(
        batch_max_messages=str(total_messages), batch_max_seconds="60"
    ).start()
    inboxes = [NodeInbox(broker, node) for node in nodes]
    for inbox in inboxes:
        inbox.publish(messages[inbox.node.id])

    wait_for(lambda: all(i.received for i in inboxes), 20, "a confirmation for each node")
    metrics = scrape(collector.metrics_port)
    assert metrics["wattfleet_collector_batch_messages_count"] == 1
    assert metrics["wattfleet_collector_confirmations_total"] == len(nodes)
    for inbox in inboxes:
        stored = stored_seqs(database, inbox.node.id)
        assert stored == sent[inbox.node.id]
        assert inbox.received == [seq_ranges(stored)]
    assert inboxes[1].received == [[(10, 12), (20, 21)]]
    for inbox in inboxes:
        inbox.close()


def test_redeliveries_and_samples_dead_for_good_are_confirmed_the_rest_is_not(
    database, broker, collector_factory
):
    tenant = create_tenant(database)
    (node,) = enroll(database, broker, tenant)
    collector_factory(batch_max_seconds="0.2").start()
    inbox = NodeInbox(broker, node)
    start = datetime.now(UTC) - timedelta(minutes=30)
    at = [start + timedelta(seconds=5 * i) for i in range(20)]
    inbox.publish([sample(node.id, s, at[s]) for s in range(5)])
    wait_for(lambda: sorted(inbox.confirmed()) == [0, 1, 2, 3, 4], 20, "the first five")
    first = len(inbox.received)

    bad_batch = {
        "samples": [
            sample(node.id, 10, at[10]),
            sample(node.id, 11, at[11], battery={"soc_percent": 150}),
            {**sample(node.id, 99, at[12]), "seq": "twelve"},  # no seq to confirm
        ]
    }
    inbox.publish(
        [
            sample(node.id, 2, at[2]),  # exact redeliveries
            sample(node.id, 3, at[3]),
            sample(node.id, 7, at[1], battery={"soc_percent": 1.0}),  # conflicting duplicate
            sample(node.id, 4, at[15]),  # conflicting seq
            sample(node.id, 8, at[8], battery={"soc_percent": 150}),  # implausible value
            sample(node.id, 9, timestamp="yesterday"),  # schema violation
            sample(node.id, 2**63, at[13]),  # implausible, and no seq a seq can be
            sample(node.id, 14, datetime.now(UTC) + timedelta(hours=1)),  # in the future
            b"{not json",  # nothing readable
            bad_batch,
            sample(node.id, 16, at[16]),  # new
        ]
    )
    expected = [2, 3, 4, 7, 8, 9, 10, 11, 14, 16]
    wait_for(lambda: sorted(inbox.confirmed()[5:]) == expected, 20, "the second batch confirmed")
    later = [s for ranges in inbox.received[first:] for a, b in ranges for s in range(a, b + 1)]
    assert sorted(later) == expected
    assert stored_seqs(database, node.id) == [0, 1, 2, 3, 4, 10, 16]
    reasons = sorted(r[0] for r in dead_letters(database, node.id))
    assert reasons == sorted(
        [
            "conflicting_duplicate",
            "conflicting_seq",
            "implausible_value",
            "schema_violation",
            "implausible_value",
            "timestamp_in_future",
            "invalid_json",
            "implausible_value",
            "schema_violation",
        ]
    )
    inbox.close()


def test_a_killed_writer_confirms_only_what_was_committed_and_in_the_end_everything(
    database, broker, collector_factory
):
    tenant = create_tenant(database)
    nodes = enroll(database, broker, tenant, count=3)
    collector = collector_factory(batch_max_messages="50").start()
    inboxes = [NodeInbox(broker, node, database) for node in nodes]
    start = datetime.now(UTC) - timedelta(hours=1)
    per_node = 300
    publishers = [
        threading.Thread(
            target=inbox.publish,
            args=(
                [sample(inbox.node.id, s, start + timedelta(seconds=s)) for s in range(per_node)],
            ),
        )
        for inbox in inboxes
    ]
    for publisher in publishers:
        publisher.start()
    wait_for(lambda: count_rows(database, _TENANT_ROWS, (tenant,)) > 0, 20, "first rows")
    os.kill(collector.writer_pid(), signal.SIGKILL)
    assert count_rows(database, _TENANT_ROWS, (tenant,)) < len(nodes) * per_node, "too late"
    for publisher in publishers:
        publisher.join()

    wait_rows(database, len(nodes) * per_node, _TENANT_ROWS, (tenant,))
    wait_for(
        lambda: all(set(i.confirmed()) == set(range(per_node)) for i in inboxes),
        30,
        "every seq confirmed",
    )
    for inbox in inboxes:
        assert inbox.unstored == [], "a seq was confirmed before it was stored"
        inbox.close()
    assert "the batch writer process died" in collector.log()


_TENANT_ROWS = "SELECT count(*) FROM telemetry WHERE tenant_id = %s"


def test_a_database_outage_confirms_nothing_until_the_commit(database, broker, collector_factory):
    tenant = create_tenant(database)
    (node,) = enroll(database, broker, tenant)
    proxy, url = proxy_for_database(database.url)
    try:
        collector = collector_factory(database_url=url, db_retry_max_s="1").start()
        inbox = NodeInbox(broker, node)
        start = datetime.now(UTC) - timedelta(minutes=30)
        proxy.cut()
        inbox.publish([sample(node.id, s, start + timedelta(seconds=s)) for s in range(20)])
        wait_for(
            lambda: (
                scrape(collector.metrics_port).get("wattfleet_collector_commit_failures_total", 0)
                >= 2
            ),
            20,
            "failed commits",
        )
        assert inbox.received == []
        assert scrape(collector.metrics_port)["wattfleet_collector_confirmations_total"] == 0

        proxy.restore()
        wait_for(lambda: sorted(inbox.confirmed()) == list(range(20)), 20, "confirmations")
        assert stored_seqs(database, node.id) == list(range(20))
        inbox.close()
    finally:
        proxy.close()
