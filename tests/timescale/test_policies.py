"""Retention and compression jobs drop and compress what they should."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.support.fleet import create_node, create_tenant

pytestmark = pytest.mark.integration


def _job(conn, proc, table):
    (job,) = conn.execute(
        "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = %s"
        " AND hypertable_name = %s",
        (proc, table),
    ).fetchone()
    return job


def test_retention_and_compression_jobs(database):
    tenant = create_tenant(database)
    node = create_node(database, tenant)
    now = datetime.now(UTC)
    ages = [timedelta(days=days) for days in (45, 35, 20, 10, 1)] + [timedelta(hours=2)]
    with database.connect() as conn:
        for seq, age in enumerate(ages):
            conn.execute(
                "INSERT INTO telemetry (ts, node_id, tenant_id, seq, soc_percent)"
                " VALUES (%s, %s, %s, %s, 50)",
                (now - age, node, tenant, seq),
            )
        for days in (20, 1):
            conn.execute(
                "INSERT INTO dead_letters (received_at, topic, node_id, reason, detail, payload)"
                " VALUES (%s, 'nodes/x/telemetry', %s, 'invalid_json', 'test', 'x')",
                (now - timedelta(days=days), node),
            )

        conn.execute(f"CALL run_job({_job(conn, 'policy_retention', 'telemetry')})")
        conn.execute(f"CALL run_job({_job(conn, 'policy_retention', 'dead_letters')})")
        conn.execute(f"CALL run_job({_job(conn, 'policy_compression', 'telemetry')})")

        kept = [
            r[0]
            for r in conn.execute(
                "SELECT seq FROM telemetry WHERE node_id = %s ORDER BY seq", (node,)
            )
        ]
        dead = conn.execute(
            "SELECT count(*) FROM dead_letters WHERE node_id = %s", (node,)
        ).fetchone()[0]
        compressed = dict(
            conn.execute(
                "SELECT c.range_end > %s, bool_and(c.is_compressed)"
                " FROM timescaledb_information.chunks c"
                " WHERE c.hypertable_name = 'telemetry' AND c.range_end <= %s"
                " GROUP BY 1",
                (now - timedelta(hours=2), now),
            ).fetchall()
        )
        recent_chunk_compressed = conn.execute(
            "SELECT is_compressed FROM timescaledb_information.chunks"
            " WHERE hypertable_name = 'telemetry' AND range_start <= %s AND range_end > %s",
            (now - timedelta(hours=2), now - timedelta(hours=2)),
        ).fetchone()[0]
    assert kept == [2, 3, 4, 5]  # 45 and 35 days old: dropped; 20, 10, 1 day, 2 h: kept
    assert dead == 1
    # Every chunk (6 hours, migration 0026) that ended more than 2 hours ago is compressed.
    assert compressed[False] is True
    assert recent_chunk_compressed is False
    # Compressed rows stay readable; segmented by node, ordered by time, then seq.
    with database.connect() as conn:
        settings = conn.execute(
            "SELECT attname, segmentby_column_index, orderby_column_index, orderby_asc"
            " FROM timescaledb_information.compression_settings"
            " WHERE hypertable_name = 'telemetry' ORDER BY orderby_column_index NULLS FIRST"
        ).fetchall()
    assert settings == [("node_id", 1, None, None), ("ts", None, 1, False), ("seq", None, 2, False)]


def test_late_samples_insert_idempotently_into_compressed_chunks(database):
    """An edge backlog (up to a week) reaches past the 1-day compression horizon."""
    tenant = create_tenant(database)
    node = create_node(database, tenant)
    old = datetime.now(UTC) - timedelta(days=9)
    insert = (
        "INSERT INTO telemetry (ts, node_id, tenant_id, seq, soc_percent)"
        " VALUES (%s, %s, %s, %s, 50) ON CONFLICT (node_id, ts) DO NOTHING"
    )
    with database.connect() as conn:
        conn.execute(insert, (old, node, tenant, 1))
        conn.execute(f"CALL run_job({_job(conn, 'policy_compression', 'telemetry')})")
        chunk_compressed = conn.execute(
            "SELECT is_compressed FROM timescaledb_information.chunks"
            " WHERE hypertable_name = 'telemetry' AND range_start <= %s AND range_end > %s",
            (old, old),
        ).fetchone()[0]
        duplicate = conn.execute(insert, (old, node, tenant, 1)).rowcount
        late = conn.execute(insert, (old + timedelta(seconds=5), node, tenant, 2)).rowcount
        rows = conn.execute(
            "SELECT seq FROM telemetry WHERE node_id = %s ORDER BY seq", (node,)
        ).fetchall()
    assert chunk_compressed is True
    assert (duplicate, late) == (0, 1)
    assert rows == [(1,), (2,)]


def test_node_logs_are_kept_30_days_after_their_command(database):
    tenant = create_tenant(database)
    node = create_node(database, tenant)
    now = datetime.now(UTC)
    with database.connect() as conn:
        (drop_after,) = conn.execute(
            "SELECT config->>'drop_after' FROM timescaledb_information.jobs"
            " WHERE proc_name = 'policy_retention' AND hypertable_name = 'node_logs'"
        ).fetchone()
        for age in (40, 20):
            command_id = f"{node}-{age}"
            issued_at = now - timedelta(days=age)
            conn.execute(
                "INSERT INTO commands (id, node_id, tenant_id, type, params, state,"
                " issued_at, expires_at) VALUES (%s, %s, %s, 'FETCH_LOGS', '{}', 'succeeded',"
                " %s, %s)",
                (command_id, node, tenant, issued_at, issued_at + timedelta(minutes=5)),
            )
            conn.execute(
                "INSERT INTO node_logs (issued_at, command_id, chunk, chunk_count, lines)"
                " VALUES (%s, %s, 0, 1, ARRAY['a line'])",
                (issued_at, command_id),
            )
        conn.execute(f"CALL run_job({_job(conn, 'policy_retention', 'node_logs')})")
        kept = conn.execute(
            "SELECT command_id FROM node_logs WHERE command_id LIKE %s", (f"{node}-%",)
        ).fetchall()
    assert drop_after == "30 days"
    assert kept == [(f"{node}-20",)]
