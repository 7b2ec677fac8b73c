"""node_status keeps each node's safety lock and dynamic strategy, as its heartbeat
reports them (contract/site_control.py, `NodeStatus.safety_lock` and `.strategy`).

- `safety_locked`: whether the site refuses control commands (null: the agent never
  reported a lock: it predates it); `safety_lock_source`: local (held on the site) or
  remote (held by the hub's admin); `safety_lock_by`, `safety_lock_reason`,
  `safety_locked_since`: the holder's; `safety_lock_command_id`: the last SAFETY_LOCK
  command the agent applied, so the hub can tell whether the report already reflects
  its newest lock command (control_api/safety_lock.py);
- `strategy_enabled`, `strategy`: the dynamic strategy the agent runs with;
- `safety_lock_reported_at`: the heartbeat's own time, so a late or redelivered one
  never overwrites a newer one.

Who locked and unlocked through the hub, and why, is in the audit log and the commands
table; what the site reported over time is in node_events. `tenant_view.node_status`
is `SELECT s.*`, expanded when the view was made, so it is re-created around the
change, with its grant.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-01
"""

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

TENANT_FILTER = (
    "(SELECT tr.tenant_id FROM public.tenant_roles tr WHERE tr.role_name = current_user)"
)

COLUMNS = (
    ("safety_locked", "boolean"),
    (
        "safety_lock_source",
        "text CHECK (safety_lock_source IN ('local', 'remote'))",
    ),
    ("safety_lock_by", "text"),
    ("safety_lock_reason", "text"),
    ("safety_locked_since", "timestamptz"),
    ("safety_lock_command_id", "text"),
    ("strategy_enabled", "boolean"),
    ("strategy", "text"),
    ("safety_lock_reported_at", "timestamptz"),
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
