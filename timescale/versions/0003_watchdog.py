"""Watchdog: where a node's state came from, and the alerts it has sent.

`node_status.state_source` is `status` when the node said so (its status message or
last will) and `watchdog` when the watchdog inferred it from silence; fresh telemetry
revokes only the inferred kind. `node_alerts` holds what the watchdog has told
Alertmanager, so a new leader re-sends what is firing and resolves each alert once.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


TENANT_FILTER = (
    "(SELECT tr.tenant_id FROM public.tenant_roles tr WHERE tr.role_name = current_user)"
)


def _node_status_view(columns: str) -> list[str]:
    # Dropped and re-created: a view cannot lose columns (see the downgrade).
    return [
        "DROP VIEW IF EXISTS tenant_view.node_status",
        "CREATE VIEW tenant_view.node_status WITH (security_barrier) AS"
        f" SELECT {columns} FROM public.node_status s JOIN public.nodes n ON n.id = s.node_id"
        f" WHERE n.tenant_id = {TENANT_FILTER}",
        "GRANT SELECT ON tenant_view.node_status TO wattfleet_tenant",
    ]


def upgrade() -> None:
    op.execute(
        "ALTER TABLE node_status ADD COLUMN IF NOT EXISTS state_source text NOT NULL"
        " DEFAULT 'status' CHECK (state_source IN ('status', 'watchdog'))"
    )
    for statement in _node_status_view("s.*"):
        op.execute(statement)
    op.execute(
        """
        CREATE TABLE IF NOT EXISTS node_alerts (
            node_id text NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
            alertname text NOT NULL,
            -- firing: re-sent every run; resolving: the resolution is still to be sent.
            state text NOT NULL CHECK (state IN ('firing', 'resolving')),
            starts_at timestamptz NOT NULL,
            ends_at timestamptz,
            labels jsonb NOT NULL,
            annotations jsonb NOT NULL,
            PRIMARY KEY (node_id, alertname)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS node_alerts")
    op.execute("DROP VIEW IF EXISTS tenant_view.node_status")
    op.execute("ALTER TABLE node_status DROP COLUMN IF EXISTS state_source")
    for statement in _node_status_view("s.*"):
        op.execute(statement)
