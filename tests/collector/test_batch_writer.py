"""BatchWriter against the real database: the direct COPY and its idempotent fallback."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from collector.decode import DecodedMessage, Decoder, Limits, Reason
from collector.ingest import BatchWriter
from collector.telemetry_row import as_sent
from contract import topics
from tests.support.fleet import create_node, create_tenant, sample

pytestmark = pytest.mark.integration


def _batch(
    node_id: str, seqs: list[int], start: datetime, received_at: datetime
) -> list[DecodedMessage]:
    decoder = Decoder(Limits())
    out = []
    for seq in seqs:
        payload = json.dumps(sample(node_id, seq, start + timedelta(seconds=5 * seq))).encode()
        out.append(decoder.decode(topics.telemetry(node_id), payload, received_at))
    return out


def _write(database, batch: list[DecodedMessage]):
    with database.connect() as conn:
        return BatchWriter(conn).write(batch, datetime.now(UTC))


def test_new_rows_load_directly_and_stored_ones_are_skipped_on_the_fallback(database):
    tenant = create_tenant(database)
    node = create_node(database, tenant)
    start = datetime.now(UTC) - timedelta(hours=1)
    first_seen = datetime.now(UTC) - timedelta(minutes=5)

    result = _write(database, _batch(node, [0, 1, 2], start, first_seen))
    assert (result.attempted, result.inserted) == (3, 3)

    # Two stored rows, two new ones, and one of the new ones twice in the same batch:
    # the direct COPY is refused on the unique key and the staged insert keeps the rest.
    again = datetime.now(UTC)
    result = _write(database, _batch(node, [1, 2, 3, 4, 4], start, again))
    assert (result.attempted, result.inserted) == (5, 2)
    assert result.confirmed == {node: [(1, 4)]}  # stored already or now, each once

    with database.connect() as conn:
        received = conn.execute(
            "SELECT seq, received_at FROM telemetry WHERE node_id = %s ORDER BY seq", (node,)
        ).fetchall()
    # Stored rows are left as they were; the new ones carry the second batch's time.
    assert [seq for seq, _ in received] == [0, 1, 2, 3, 4]
    assert [at for _, at in received] == [first_seen] * 3 + [again] * 2


def _message(node_id: str, body: dict[str, Any], received_at: datetime) -> DecodedMessage:
    payload = json.dumps(body, separators=(",", ":")).encode()
    return Decoder(Limits()).decode(topics.telemetry(node_id), payload, received_at)


def _stored(database, node_id: str):
    with database.connect() as conn:
        return conn.execute(
            "SELECT seq, ts, soc_percent FROM telemetry WHERE node_id = %s ORDER BY ts", (node_id,)
        ).fetchall()


def _dead(database, node_id: str):
    with database.connect() as conn:
        return conn.execute(
            "SELECT reason, detail, payload FROM dead_letters WHERE node_id = %s"
            " ORDER BY received_at, reason, payload",
            (node_id,),
        ).fetchall()


def test_a_sample_at_a_stored_time_with_other_values_is_dead_lettered(database):
    """An exact redelivery is a counted duplicate; other values under the same node and
    time are a conflict, in the same batch or against a stored row (once dropped silently
    by ON CONFLICT DO NOTHING)."""
    tenant = create_tenant(database)
    node = create_node(database, tenant)
    start = datetime.now(UTC) - timedelta(hours=1)
    at = [start + timedelta(seconds=5 * i) for i in range(6)]
    first_seen = datetime.now(UTC) - timedelta(minutes=5)
    stored = [sample(node, i, at[i]) for i in range(3)]
    result = _write(database, [_message(node, body, first_seen) for body in stored])
    assert (result.attempted, result.inserted) == (3, 3)

    again = datetime.now(UTC)
    forged = sample(node, 2, at[2], battery={"soc_percent": 99.0})
    twin = sample(node, 4, at[4], battery={"soc_percent": 98.0})
    batch = [
        _message(node, stored[1], again),  # a redelivery
        _message(node, forged, again),  # stored time, other values
        _message(node, sample(node, 3, at[3]), again),
        _message(node, sample(node, 3, at[3]), again),  # repeated within the batch
        _message(node, sample(node, 4, at[4]), again),
        _message(node, twin, again),  # same time as the one before, other values
        _message(node, {"samples": [sample(node, 5, at[5]), stored[0]]}, again),
    ]
    result = _write(database, batch)

    assert (result.attempted, result.inserted) == (6, 3)
    assert result.dead == {Reason.CONFLICTING_DUPLICATE: 2}
    # The conflicts are dead for good: their seqs (2 and 4) are confirmed too.
    assert result.confirmed == {node: [(0, 5)]}
    assert _stored(database, node) == [
        (i, at[i], stored[i]["battery"]["soc_percent"] if i < 3 else 50.0 + i) for i in range(6)
    ]
    dead = _dead(database, node)
    assert [(reason, json.loads(payload)) for reason, _, payload in dead] == [
        ("conflicting_duplicate", forged),
        ("conflicting_duplicate", twin),
    ]
    assert all(at[2].isoformat() in detail or at[4].isoformat() in detail for _, detail, _ in dead)


def test_a_seq_stored_under_another_time_is_dead_lettered(database):
    """A node's seq is unique: the first sample with it stays, a later one with another
    time is a conflict, against a stored row or in the same batch (once stored twice)."""
    tenant = create_tenant(database)
    node = create_node(database, tenant)
    start = datetime.now(UTC) - timedelta(hours=1)
    at = [start + timedelta(seconds=5 * i) for i in range(10)]
    _write(database, [_message(node, sample(node, i, at[i]), at[i]) for i in range(3)])

    reused = sample(node, 1, at[7])
    reused["optimizer"]["latest_decision"] = "export everything"
    twin = sample(node, 4, at[6])
    replay = {"samples": [sample(node, 3, at[3]), reused, sample(node, 4, at[4]), twin]}
    result = _write(database, [_message(node, replay, datetime.now(UTC))])

    assert (result.attempted, result.inserted) == (2, 2)
    assert result.dead == {Reason.CONFLICTING_SEQ: 2}
    assert result.confirmed == {node: [(1, 1), (3, 4)]}
    assert [(seq, ts) for seq, ts, _ in _stored(database, node)] == [(i, at[i]) for i in range(5)]
    reasons = sorted(
        (reason, json.loads(payload)["seq"]) for reason, _, payload in _dead(database, node)
    )
    assert reasons == [("conflicting_seq", 1), ("conflicting_seq", 4)]
    with database.connect() as conn:
        decisions = conn.execute(
            "SELECT decision FROM optimizer_decisions WHERE node_id = %s", (node,)
        ).fetchall()
        (last_seq,) = conn.execute(
            "SELECT last_seq FROM node_status WHERE node_id = %s", (node,)
        ).fetchone()
    assert decisions == [("charge from PV",)]  # not the conflicting sample's
    assert last_seq == 4


def test_a_message_the_database_refuses_is_confirmed_with_the_rest_of_its_batch(database):
    """Text with a NUL passes validation and PostgreSQL refuses it: the batch is split
    down to that message, filed whole; its samples are dead for good, so confirmed."""
    tenant = create_tenant(database)
    node = create_node(database, tenant)
    start = datetime.now(UTC) - timedelta(hours=1)
    at = [start + timedelta(seconds=5 * i) for i in range(6)]
    poison = {"samples": [sample(node, 2, at[2]), sample(node, 3, at[3])]}
    poison["samples"][1]["grid"]["mode"] = "AUTO\u0000"
    batch = [_message(node, sample(node, i, at[i]), at[i]) for i in (0, 1, 4, 5)]
    batch.insert(2, _message(node, poison, at[4]))
    result = _write(database, batch)

    assert result.dead == {Reason.REJECTED_BY_DATABASE: 1}
    assert [seq for seq, _, _ in _stored(database, node)] == [0, 1, 4, 5]
    # One range list per part the batch was split into.
    confirmed = [seq for first, last in result.confirmed[node] for seq in range(first, last + 1)]
    assert sorted(confirmed) == [0, 1, 2, 3, 4, 5]


def test_a_sample_stored_before_fixed_point_columns_is_redelivered_not_in_conflict(database):
    """A row stored before migration 0026 holds its energies, voltage and powers in the
    float columns; an agent replaying that sample after the upgrade (its buffer keeps a
    week) is a redelivery, and other values at its time still a conflict."""
    tenant = create_tenant(database)
    node = create_node(database, tenant)
    at = datetime.now(UTC) - timedelta(hours=1)
    old = sample(node, 1, at)
    [row] = Decoder(Limits()).decode(topics.telemetry(node), json.dumps(old).encode(), at).rows
    values = as_sent(row) | {"tenant_id": tenant}
    # As the collector wrote it before 0026: every field under its own name, as sent.
    with database.connect() as conn:
        conn.execute(
            f"INSERT INTO telemetry ({', '.join(values)})"
            f" VALUES ({', '.join(['%s'] * len(values))})",
            list(values.values()),
        )
    forged = sample(node, 1, at, energy={**old["energy"], "pv_wh": 2.081})
    again = datetime.now(UTC)
    result = _write(database, [_message(node, old, again)])
    assert (result.attempted, result.inserted, result.dead) == (1, 0, {})
    assert result.confirmed == {node: [(1, 1)]}
    result = _write(database, [_message(node, forged, again)])
    assert result.dead == {Reason.CONFLICTING_DUPLICATE: 1}
