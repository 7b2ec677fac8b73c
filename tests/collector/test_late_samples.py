"""Late samples land in compressed chunks (migration 0020 compresses raw telemetry after
a day; an agent's buffer replays up to a week): the collector's writer stores them,
skips what is stored already and dead-letters conflicts there as anywhere else."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from collector.decode import DecodedMessage, Decoder, Limits, Reason
from collector.ingest import BatchWriter
from contract import topics
from tests.support.fleet import create_node, create_tenant, sample

pytestmark = pytest.mark.integration


def _replay(node_id: str, samples: list[dict[str, Any]]) -> DecodedMessage:
    payload = json.dumps({"samples": samples}).encode()
    return Decoder(Limits()).decode(topics.telemetry(node_id), payload, datetime.now(UTC))


def _write(database, node_id: str, samples: list[dict[str, Any]], limit: int | None = None):
    with database.connect() as conn:
        if limit is not None:
            # TimescaleDB's guard against decompressing too much in one transaction.
            conn.execute(f"SET timescaledb.max_tuples_decompressed_per_dml_transaction = {limit}")
        return BatchWriter(conn).write([_replay(node_id, samples)], datetime.now(UTC))


def _compressed(database, at: datetime) -> bool:
    with database.connect() as conn:
        (job,) = conn.execute(
            "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name ="
            " 'policy_compression' AND hypertable_name = 'telemetry'"
        ).fetchone()
        conn.execute(f"CALL run_job({job})")
        (compressed,) = conn.execute(
            "SELECT is_compressed FROM timescaledb_information.chunks"
            " WHERE hypertable_name = 'telemetry' AND range_start <= %s AND range_end > %s",
            (at, at),
        ).fetchone()
    return bool(compressed)


def test_a_replay_days_late_is_stored_into_compressed_chunks_once(database):
    tenant = create_tenant(database)
    node = create_node(database, tenant)
    start = datetime.now(UTC).replace(hour=6, minute=0, second=0, microsecond=0)
    start -= timedelta(days=3)
    at = [start + timedelta(seconds=5 * seq) for seq in range(100)]
    body = [sample(node, seq, at[seq]) for seq in range(100)]
    # What arrived live; 40..59 stayed in the agent's buffer.
    assert _write(database, node, body[:40] + body[60:]).inserted == 80
    assert _compressed(database, start)  # three days old: past the one-day horizon

    late = _write(database, node, body[40:60])
    assert (late.attempted, late.inserted, late.confirmed) == (20, 20, {node: [(40, 59)]})
    # The policy compresses again what the late rows decompressed.
    assert _compressed(database, start)
    assert _uncompressed_rows(database, start) == 0

    # Redelivered (stored already, compressed), and two conflicts with stored rows: a
    # stored time with other values, a stored seq under another time. TimescaleDB checks
    # the key without decompressing the rows into the chunk, so its guard against
    # decompressing too much in one transaction (100,000 rows by default) stays far off,
    # even at 10.
    changed = {**body[10], "battery": {**body[10]["battery"], "soc_percent": 1.0}}
    reused_seq = sample(node, 20, start - timedelta(minutes=1))
    again = _write(database, node, [*body[50:70], changed, reused_seq], limit=10)

    assert again.dead == {Reason.CONFLICTING_DUPLICATE: 1, Reason.CONFLICTING_SEQ: 1}
    assert (again.attempted, again.inserted) == (20, 0)
    assert again.confirmed == {node: [(10, 10), (20, 20), (50, 69)]}
    with database.connect() as conn:
        stored = conn.execute(
            "SELECT seq, ts, soc_percent FROM telemetry WHERE node_id = %s ORDER BY ts", (node,)
        ).fetchall()
    assert [(seq, ts) for seq, ts, _ in stored] == [(seq, at[seq]) for seq in range(100)]
    assert stored[10][2] == body[10]["battery"]["soc_percent"]  # the first one stays


def _uncompressed_rows(database, at: datetime) -> int:
    """Rows in the uncompressed part of the chunk holding `at`."""
    with database.connect() as conn:
        (chunk,) = conn.execute(
            "SELECT format('%%I.%%I', chunk_schema, chunk_name) FROM timescaledb_information.chunks"
            " WHERE hypertable_name = 'telemetry' AND range_start <= %s AND range_end > %s",
            (at, at),
        ).fetchone()
        return int(conn.execute(f"SELECT count(*) FROM ONLY {chunk}").fetchone()[0])
