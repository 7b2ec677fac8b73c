"""An index on telemetry (node_id, seq): the collector looks up a node's stored samples
by seq, to refuse a seq reused under another time (collector/conflicts.py).

Not a unique index: TimescaleDB's unique indexes must include the partitioning column
(ts), so the rule is checked by the collector against the chunks this index serves.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX IF NOT EXISTS telemetry_node_seq_idx ON telemetry (node_id, seq)")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS telemetry_node_seq_idx")
