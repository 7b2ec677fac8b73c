"""Migration 0006: the (node_id, seq) index the collector's seq check reads
(collector/conflicts.py), on every chunk of telemetry, and gone again on downgrade."""

from __future__ import annotations

import pytest

from tests.support.services import downgrade, empty_database, migrate

pytestmark = pytest.mark.integration

# The index on the hypertable and the copies TimescaleDB makes of it on each chunk.
SEQ_INDEXES = """
SELECT count(*) FILTER (WHERE c.relname = 'telemetry'),
       count(*) FILTER (WHERE c.relname <> 'telemetry')
FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_class x ON x.oid = i.indexrelid
WHERE x.relname LIKE '%telemetry_node_seq_idx'
  AND (SELECT array_agg(a.attname ORDER BY k.n) FROM unnest(i.indkey) WITH ORDINALITY k(attnum, n)
       JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum)
      = ARRAY['node_id', 'seq']::name[]
"""

# Two days of rows, so two chunks exist before the index is created.
ROWS = """
INSERT INTO tenants (id, slug, name) OVERRIDING SYSTEM VALUE VALUES (1, 't', 'T');
INSERT INTO nodes (id, tenant_id, display_name) VALUES ('n1', 1, 'n1');
INSERT INTO telemetry (ts, node_id, tenant_id, seq, grid_mode)
SELECT now() - i * interval '1 hour', 'n1', 1, i, 'AUTO' FROM generate_series(0, 47) i;
"""


def test_the_seq_index_covers_every_chunk_and_downgrades_away():
    with empty_database("seq-index") as db:
        migrate(db)
        downgrade(db, "0005")
        with db.connect() as conn:
            conn.execute(ROWS)
            assert conn.execute(SEQ_INDEXES).fetchone() == (0, 0)
        migrate(db)
        with db.connect() as conn:
            (on_table, on_chunks) = conn.execute(SEQ_INDEXES).fetchone()
            chunks = conn.execute("SELECT count(*) FROM show_chunks('telemetry')").fetchone()[0]
        assert (on_table, on_chunks) == (1, chunks)
        assert chunks >= 2
        downgrade(db, "0005")
        with db.connect() as conn:
            assert conn.execute(SEQ_INDEXES).fetchone() == (0, 0)
