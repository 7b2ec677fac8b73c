"""node_status keeps each node's remote debug tunnel, as its heartbeat reports it
(contract/tunnel.py, `NodeStatus.tunnel`).

- `tunnel_state`: closed, opening, open or failed (null: the agent never reported one:
  it predates tunnels); `tunnel_until`: when an open tunnel closes by itself;
  `tunnel_remote_port`: the bastion's port it listens on; `tunnel_detail`: who asked and
  why while open, how it ended once closed (by whom, or expired), or why it failed;
  `tunnel_public_key`: the agent's tunnel key, for the bastion's authorized_keys (null:
  remote access is off on the node); `tunnel_reported_at`: the heartbeat's own time, so
  a late or redelivered one never overwrites a newer one.

Who opened and closed a tunnel, when and why, is in the audit log (`open_tunnel`,
`close_tunnel`) and the commands table. `tenant_view.node_status` is `SELECT s.*`,
expanded when the view was made, so it is re-created around the change, with its grant.

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-30
"""

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

TENANT_FILTER = (
    "(SELECT tr.tenant_id FROM public.tenant_roles tr WHERE tr.role_name = current_user)"
)

COLUMNS = (
    (
        "tunnel_state",
        "text CHECK (tunnel_state IN ('closed', 'opening', 'open', 'failed'))",
    ),
    ("tunnel_until", "timestamptz"),
    ("tunnel_remote_port", "integer CHECK (tunnel_remote_port BETWEEN 1 AND 65535)"),
    ("tunnel_detail", "text"),
    ("tunnel_public_key", "text"),
    ("tunnel_reported_at", "timestamptz"),
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
