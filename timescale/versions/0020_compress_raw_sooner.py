"""Raw telemetry compresses after one day instead of seven, and orders its compressed
batches by seq after ts (issue 18, docs/benchmarks.md "Storage per site").

- A 5-second row takes ~460 bytes uncompressed (heap and three indexes) and ~56
  compressed on realistic data (tests/benchmarks/storage.py): the seven uncompressed days
  were three quarters of a site's raw storage. A site's day compressed is also ~20
  batches on a few hundred pages, where uncompressed its rows lie among every other
  site's on thousands (329 pages against 4,145 at 8 sites, embedded database).
- Late samples (an agent's buffer replays up to a week) now land in compressed chunks.
  TimescaleDB inserts into them with the unique key checked (the collector's COPY and
  its ON CONFLICT fallback work as before; tests/collector/test_late_samples.py), and
  the policy recompresses what they changed on its next run.
- `seq` after `ts` in the order: the same size (ts is unique per node, so seq never
  reorders a batch), but each batch keeps its seq range, so the collector's seq check
  (collector/conflicts.py, the last 7 days) opens only the batches holding those seqs
  instead of every batch of the node in the window.
- The job runs hourly instead of every 12 hours, so a day waits at most one hour past
  its horizon. New settings apply to chunks compressed from now on; compressed chunks
  keep theirs.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-01
"""

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def _policy(orderby: str, compress_after: str, schedule: str) -> list[str]:
    return [
        f"ALTER TABLE telemetry SET (timescaledb.compress_orderby = '{orderby}')",
        "SELECT remove_compression_policy('telemetry', if_exists => true)",
        f"SELECT add_compression_policy('telemetry', compress_after => INTERVAL"
        f" '{compress_after}', schedule_interval => INTERVAL '{schedule}')",
    ]


def upgrade() -> None:
    for statement in _policy("ts DESC, seq DESC", "1 day", "1 hour"):
        op.execute(statement)


def downgrade() -> None:
    # As migration 0001 made it (the default schedule for 1-day chunks: 12 hours).
    for statement in _policy("ts DESC", "7 days", "12 hours"):
        op.execute(statement)
