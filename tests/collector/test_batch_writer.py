"""BatchWriter against the real database: the direct COPY and its idempotent fallback."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from collector.decode import DecodedMessage, Decoder, Limits
from collector.ingest import BatchWriter
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

    with database.connect() as conn:
        received = conn.execute(
            "SELECT seq, received_at FROM telemetry WHERE node_id = %s ORDER BY seq", (node,)
        ).fetchall()
    # Stored rows are left as they were; the new ones carry the second batch's time.
    assert [seq for seq, _ in received] == [0, 1, 2, 3, 4]
    assert [at for _, at in received] == [first_seen] * 3 + [again] * 2
