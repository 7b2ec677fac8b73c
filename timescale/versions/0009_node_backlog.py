"""node_status keeps each node's unconfirmed backlog, as its heartbeat reports it.

- `buffer_depth`: samples waiting in the node's buffer; `oldest_unconfirmed_age_s`:
  how old the oldest of them was (null when none waits, and from agents that predate
  hub confirmations); `backlog_reported_at`: the heartbeat's own time (the node's
  clock, never later than its arrival), so a redelivered or late heartbeat never
  overwrites a newer one.
- `backlog_growth_base` and `backlog_growing_since`: while the backlog grows, the depth
  it grew from and when (the hub's clock) it was first seen above it; both null
  otherwise. The collector's rule (collector/ingest.py) and the watchdog's
  `NodeBacklogStuck` alert read them.

`tenant_view.node_status` is `SELECT s.*`, expanded when the view was made, so it is
re-created around the change, with its grant.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

TENANT_FILTER = (
    "(SELECT tr.tenant_id FROM public.tenant_roles tr WHERE tr.role_name = current_user)"
)

COLUMNS = (
    ("buffer_depth", "bigint CHECK (buffer_depth >= 0)"),
    ("oldest_unconfirmed_age_s", "bigint CHECK (oldest_unconfirmed_age_s >= 0)"),
    ("backlog_reported_at", "timestamptz"),
    ("backlog_growth_base", "bigint"),
    ("backlog_growing_since", "timestamptz"),
)


def _around_node_status_view(changes: list[str]) -> None:
    op.execute("DROP VIEW IF EXISTS tenant_view.node_status")
    for change in changes:
        op.execute(change)
    op.execute(
        "CREATE VIEW tenant_view.node_status WITH (security_barrier) AS"
        " SELECT s.* FROM public.node_status s JOIN public.nodes n ON n.id = s.node_id"
        f" WHERE n.tenant_id = {TENANT_FILTER}"
    )
    op.execute("GRANT SELECT ON tenant_view.node_status TO wattfleet_tenant")


def upgrade() -> None:
    _around_node_status_view(
        [
            f"ALTER TABLE node_status ADD COLUMN IF NOT EXISTS {name} {definition}"
            for name, definition in COLUMNS
        ]
    )


def downgrade() -> None:
    _around_node_status_view(
        [f"ALTER TABLE node_status DROP COLUMN IF EXISTS {name}" for name, _ in COLUMNS]
    )
