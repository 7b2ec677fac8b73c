"""Reported configs: the config each node says it runs.

One row per node, replaced by each report the control API accepts
(`contract.node_config.ReportedConfig` on `nodes/<id>/config`): the config without
secrets, the version of the last push the node confirmed (NULL before any or for a
config set by hand), when the node reported it (its clock) and when the hub received it.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

STATEMENTS = [
    """
    CREATE TABLE IF NOT EXISTS node_reported_configs (
        node_id text PRIMARY KEY REFERENCES nodes (id),
        version integer CHECK (version >= 1),
        config jsonb NOT NULL,
        reported_at timestamptz NOT NULL,
        received_at timestamptz NOT NULL DEFAULT now()
    )
    """,
]


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS node_reported_configs")
