"""node_status loses `last_decision`: nothing ever wrote or read it (the optimizer's
decisions live in `optimizer_decisions`, one row per change).

`tenant_view.node_status` is `SELECT s.*`, expanded when the view was made, so it is
re-created around the column change, with its grant.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TENANT_FILTER = (
    "(SELECT tr.tenant_id FROM public.tenant_roles tr WHERE tr.role_name = current_user)"
)


def _around_node_status_view(change: str) -> None:
    op.execute("DROP VIEW IF EXISTS tenant_view.node_status")
    op.execute(change)
    op.execute(
        "CREATE VIEW tenant_view.node_status WITH (security_barrier) AS"
        " SELECT s.* FROM public.node_status s JOIN public.nodes n ON n.id = s.node_id"
        f" WHERE n.tenant_id = {TENANT_FILTER}"
    )
    op.execute("GRANT SELECT ON tenant_view.node_status TO wattfleet_tenant")


def upgrade() -> None:
    _around_node_status_view("ALTER TABLE node_status DROP COLUMN IF EXISTS last_decision")


def downgrade() -> None:
    _around_node_status_view("ALTER TABLE node_status ADD COLUMN IF NOT EXISTS last_decision text")
