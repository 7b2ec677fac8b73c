"""Compressed aggregates: `telemetry_5m` (kept 400 days) and `telemetry_1h` (kept for
good) compress their chunks once no refresh reaches them any more, segmented by node and
ordered by bucket, so a site's range is a few compressed batches instead of one page per
row (issue 18: 26k five-minute rows on 26k pages for one site's 90 days; 6.8 GB
uncompressed for 1,000 sites).

Compression starts after the refresh windows (8 and 9 days, migration 0013) and the
edge buffer's week: a late backlog still lands in uncompressed chunks. `telemetry_1d` is
small (one row per site and day) and stays as it is.

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-30
"""

from alembic import op

from timescale.earlier_migration import on_aggregates

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

COMPRESS_AFTER = {"telemetry_5m": "14 days", "telemetry_1h": "30 days"}
# Chunks sized to the rows they hold per site (each aggregate's chunks were 10 days,
# as the raw table's 1 day x 10): the hourly one 30 days (720 rows a site), the daily one
# a year (365 rows a site) instead of 10 rows a site per chunk. New chunks only.
CHUNK_INTERVALS = {"telemetry_1h": "30 days", "telemetry_1d": "365 days"}


def upgrade() -> None:
    statements = [
        f"SELECT set_chunk_time_interval('{view}', INTERVAL '{interval}')"
        for view, interval in CHUNK_INTERVALS.items()
    ]
    for view, after in COMPRESS_AFTER.items():
        statements += [
            f"ALTER MATERIALIZED VIEW {view} SET (timescaledb.compress = true,"
            " timescaledb.compress_segmentby = 'node_id',"
            " timescaledb.compress_orderby = 'bucket')",
            f"SELECT add_compression_policy('{view}', compress_after => INTERVAL '{after}',"
            " if_not_exists => true)",
        ]
    for statement in on_aggregates(statements):
        op.execute(statement)


def downgrade() -> None:
    for view in CHUNK_INTERVALS:
        op.execute(f"SELECT set_chunk_time_interval('{view}', INTERVAL '10 days')")
    for view in COMPRESS_AFTER:
        op.execute(f"SELECT remove_compression_policy('{view}', if_exists => true)")
        op.execute(f"SELECT decompress_chunk(c, true) FROM show_chunks('{view}') c")
        op.execute(f"ALTER MATERIALIZED VIEW {view} SET (timescaledb.compress = false)")
