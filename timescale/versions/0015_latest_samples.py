"""Each node's latest sample, kept by the collector in `node_status`.

"Now" panels (a site's battery, grid mode, power; the fleet's power now; the Sites
table) read it instead of `ORDER BY ts DESC LIMIT 1` on `telemetry`, whose cost through
a tenant's security-barrier view grew with every chunk kept (issue 18: all 91 chunks
decompressed for one row). `latest_ts` is the newest sample's time; the collector
replaces the values only with a newer sample's, whichever order samples arrive in.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30
"""

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

TENANT_FILTER = (
    "(SELECT tr.tenant_id FROM public.tenant_roles tr WHERE tr.role_name = current_user)"
)
# As contract.fields.LATEST names them, frozen here.
COLUMNS = (
    ("latest_ts", "timestamptz"),
    ("soc_percent", "double precision"),
    ("battery_power_w", "double precision"),
    ("solar_power_w", "double precision"),
    ("grid_power_w", "double precision"),
    ("load_power_w", "double precision"),
    ("grid_mode", "text"),
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
        # Seeded from what is stored: a node's newest sample, once.
        + [
            "UPDATE node_status s SET latest_ts = t.ts, soc_percent = t.soc_percent,"
            " battery_power_w = t.battery_power_w, solar_power_w = t.solar_power_w,"
            " grid_power_w = t.grid_power_w, load_power_w = t.load_power_w,"
            " grid_mode = t.grid_mode"
            " FROM nodes n CROSS JOIN LATERAL (SELECT * FROM telemetry"
            "   WHERE telemetry.node_id = n.id ORDER BY ts DESC LIMIT 1) t"
            " WHERE s.node_id = n.id AND s.latest_ts IS NULL"
        ]
    )


def downgrade() -> None:
    _around_node_status_view(
        [f"ALTER TABLE node_status DROP COLUMN IF EXISTS {name}" for name, _ in COLUMNS]
    )
