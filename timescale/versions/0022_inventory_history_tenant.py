"""Node inventory history stays with the tenant it was recorded under.

Migration 0018's `tenant_view.node_inventory_history` joined the history to the node's
tenant now, so a node moved to another tenant (PATCH /nodes/{id}) took its inventory
history along: the new tenant read the old one's (serial numbers, firmware changes, its
dates) and the old tenant lost it, unlike every other history (docs/control-api.md).
Each row now carries the tenant it was recorded under, like telemetry and node_events,
and the view filters on it. Rows recorded before are stamped with their node's tenant
now (what 0018's view showed). The current inventory (`node_inventory`) goes with the
node, as its status does.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-01
"""

from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

TENANT_FILTER = (
    "(SELECT tr.tenant_id FROM public.tenant_roles tr WHERE tr.role_name = current_user)"
)
VIEW = "tenant_view.node_inventory_history"


def _view(select: str) -> None:
    op.execute(f"DROP VIEW IF EXISTS {VIEW}")
    op.execute(f"CREATE VIEW {VIEW} WITH (security_barrier) AS {select}")
    op.execute(f"GRANT SELECT ON {VIEW} TO wattfleet_tenant")


def upgrade() -> None:
    op.execute("ALTER TABLE node_inventory_history ADD COLUMN IF NOT EXISTS tenant_id bigint")
    op.execute(
        "UPDATE node_inventory_history h SET tenant_id = n.tenant_id FROM nodes n"
        " WHERE n.id = h.node_id AND h.tenant_id IS NULL"
    )
    op.execute("ALTER TABLE node_inventory_history ALTER COLUMN tenant_id SET NOT NULL")
    _view(f"SELECT * FROM public.node_inventory_history WHERE tenant_id = {TENANT_FILTER}")


def downgrade() -> None:
    _view(
        "SELECT i.id, i.node_id, i.changed_at, i.received_at, i.changes, i.inventory"
        " FROM public.node_inventory_history i JOIN public.nodes n ON n.id = i.node_id"
        f" WHERE n.tenant_id = {TENANT_FILTER}"
    )
    op.execute("ALTER TABLE node_inventory_history DROP COLUMN IF EXISTS tenant_id")
