"""The rule for poison at ingest (issue 12): any payload on a node's topic is stored or
dead-lettered with a reason, without stopping other nodes; a message that fails or kills
the batch writer is isolated by bisection and dead-lettered as `killed_writer`."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from collector.committer import Committer
from collector.config import CollectorSettings
from collector.metrics import CollectorMetrics
from collector.writer_process import WriterProcess
from contract import topics
from tests.security.poison_writer import (
    KILLS_THE_WRITER,
    RAISES_IN_THE_WRITER,
    serve_with_poison,
)
from tests.support.fleet import (
    count_rows,
    create_node,
    create_tenant,
    dead_letters,
    enroll,
    mqtt_client,
    publish_all,
    sample,
    scrape,
    wait_rows,
)
from tests.support.services import wait_for

pytestmark = pytest.mark.integration


def _raw(node_id: str, body: dict[str, Any]) -> tuple[str, bytes, float]:
    return (topics.telemetry(node_id), json.dumps(body).encode(), time.time())


def test_messages_that_kill_or_fail_the_writer_are_bisected_out_and_the_rest_commits(database):
    """A real writer process, killed with SIGKILL whenever a batch holds the marked
    message; another marked message makes writing raise. Once the batch has failed the
    writer twice it is split, down to those two, which are dead-lettered; every other
    message of both nodes is stored."""
    tenant = create_tenant(database)
    a, b = create_node(database, tenant), create_node(database, tenant)
    start = datetime.now(UTC) - timedelta(minutes=10)
    messages = []
    for i in range(40):
        node = a if i % 2 else b
        messages.append(_raw(node, sample(node, i, start + timedelta(seconds=i))))
    killer = sample(a, 100, start, grid={"current_price": 0.5, "mode": KILLS_THE_WRITER.decode()})
    raiser = sample(
        b, 101, start, grid={"current_price": 0.5, "mode": RAISES_IN_THE_WRITER.decode()}
    )
    messages.insert(7, _raw(a, killer))
    messages.insert(30, _raw(b, raiser))
    settings = CollectorSettings(
        database_url=database.url,
        database_prepared_statements=database.prepared_statements,
        db_retry_max_s=1,
    )
    registry = CollectorRegistry()
    writer = WriterProcess(settings, target=serve_with_poison)
    committer = Committer(writer, CollectorMetrics(registry), 1.0, threading.Event())
    try:
        confirmed = committer.commit(messages)
    finally:
        writer.stop()

    # What each committed part held is confirmed, the two filed undecoded are not.
    assert confirmed is not None
    seqs = {
        node: sorted({s for a, z in r for s in range(a, z + 1)}) for node, r in confirmed.items()
    }
    assert seqs == {a: list(range(1, 40, 2)), b: list(range(0, 40, 2))}
    assert (
        count_rows(database, "SELECT count(*) FROM telemetry WHERE node_id = ANY(%s)", ([a, b],))
        == 40
    )
    for node, poison in ((a, killer), (b, raiser)):
        ((reason, detail, payload),) = dead_letters(database, node)
        assert reason == "killed_writer"
        assert json.loads(payload) == poison
        assert "the last time with it alone" in detail
    assert (
        registry.get_sample_value(
            "wattfleet_collector_dead_letters_total", {"reason": "killed_writer"}
        )
        == 2
    )
    # Twice the whole batch, then once a halving for each, then once each alone.
    failures = registry.get_sample_value("wattfleet_collector_commit_failures_total")
    assert failures is not None
    assert 4 <= failures <= 16


def test_hostile_payloads_from_one_node_stall_no_other_node(database, broker, collector_factory):
    """Each payload below once killed the batch writer (so the collector retried the batch
    forever, for every node) or was filed wrongly. Now each is a dead letter with its
    reason, the other node's samples all land, and the writer never fails."""
    tenant = create_tenant(database)
    attacker, victim = enroll(database, broker, tenant, count=2)
    collector = collector_factory().start()
    writer = collector.writer_pid()
    start = datetime.now(UTC) - timedelta(minutes=10)
    at = [start + timedelta(seconds=5 * i) for i in range(20)]
    deep = b'{"samples": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    too_many = {"samples": [sample(attacker.id, 1000 + i, at[0]) for i in range(1001)]}
    mode = {"current_price": 0.5, "mode": "samples", "power_w": 1.0}
    attacks: list[tuple[str, bytes | str]] = [
        ("implausible_value", json.dumps(sample(attacker.id, 2**63, at[0]))),
        ("invalid_json", deep),
        ("schema_violation", json.dumps(too_many)),
        ("stored", json.dumps(sample(attacker.id, 1, at[1], grid=mode))),
        ("stored", json.dumps(sample(attacker.id, 2, at[2], samples=[]))),
        ("conflicting_duplicate", json.dumps(sample(attacker.id, 3, at[1]))),
        ("conflicting_seq", json.dumps(sample(attacker.id, 1, at[3]))),
    ]
    attacker_client = mqtt_client(broker, attacker.id, attacker.password)
    victim_client = mqtt_client(broker, victim.id, victim.password)
    for i, (_, payload) in enumerate(attacks):
        publish_all(attacker_client, [(topics.telemetry(attacker.id), payload)])
        body = json.dumps(sample(victim.id, i, at[i]))
        publish_all(victim_client, [(topics.telemetry(victim.id), body)])

    wait_rows(
        database, len(attacks), "SELECT count(*) FROM telemetry WHERE node_id = %s", (victim.id,)
    )
    expected = [reason for reason, _ in attacks if reason != "stored"]
    wait_for(lambda: len(dead_letters(database, attacker.id)) == len(expected), 30, "dead letters")
    assert [r[0] for r in dead_letters(database, attacker.id)] == expected
    with database.connect() as conn:
        stored = conn.execute(
            "SELECT seq, ts FROM telemetry WHERE node_id = %s ORDER BY seq", (attacker.id,)
        ).fetchall()
    assert stored == [(1, at[1]), (2, at[2])]
    metrics = scrape(collector.metrics_port)
    assert metrics.get("wattfleet_collector_commit_failures_total", 0) == 0
    assert collector.writer_pid() == writer
    assert collector.stop() == 0
