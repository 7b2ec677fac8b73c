"""Node logs: what nodes answered to FETCH_LOGS, kept 30 days.

One row per `LogChunk` (contract/commands.py) the control API accepted: which command it
answers, its place (`chunk` of `chunk_count`) and its lines. The time column is the
command's `issued_at`, the same for every chunk of a command, so the unique key
(which a hypertable's must include its time column) makes a redelivered chunk a no-op,
and retention drops a command's logs whole, 30 days after it was issued.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

STATEMENTS = [
    """
    CREATE TABLE IF NOT EXISTS node_logs (
        issued_at timestamptz NOT NULL,
        command_id text NOT NULL REFERENCES commands (id),
        chunk integer NOT NULL CHECK (chunk >= 0),
        chunk_count integer NOT NULL CHECK (chunk < chunk_count),
        lines text[] NOT NULL,
        received_at timestamptz NOT NULL DEFAULT now(),
        UNIQUE (command_id, chunk, issued_at)
    )
    """,
    # No default (issued_at) index: every read is by command, which the unique key serves.
    "SELECT create_hypertable('node_logs', by_range('issued_at', INTERVAL '7 days'),"
    " create_default_indexes => false, if_not_exists => true)",
    "SELECT add_retention_policy('node_logs', INTERVAL '30 days', if_not_exists => true)",
]


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    # Dropping the hypertable removes its retention job too.
    op.execute("DROP TABLE IF EXISTS node_logs")
