"""Node inventory: what each node talks to (contract/inventory.py), now and over time.

- `node_inventory`: one row per node, the newest inventory it reported (by its own
  clock, `reported_at`), flat for filters and panels: the inverter's manufacturer,
  model, options, firmware and serial (SunSpec common model 1), the battery's nameplate
  (capacity in Wh and Ah, charge and discharge ratings in W, and the SunSpec model they
  came from), the meter's SunSpec model, the agent's version, Python and OS, and the
  whole report as `inventory`.
- `node_inventory_history`: one row per change (the first report included): when the
  report was taken (`changed_at`, the node's clock) and received, what changed
  (`changes`: {"inverter.firmware": {"from": "1.0.0", "to": "1.1.0"}, ...}) and the
  whole report as it became. A report equal to the current one adds nothing.

Both are read by tenants through security_barrier views joined to their nodes.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-01
"""

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

TENANT_FILTER = (
    "(SELECT tr.tenant_id FROM public.tenant_roles tr WHERE tr.role_name = current_user)"
)

STATEMENTS = [
    """
    CREATE TABLE IF NOT EXISTS node_inventory (
        node_id text PRIMARY KEY REFERENCES nodes (id),
        reported_at timestamptz NOT NULL,
        received_at timestamptz NOT NULL,
        manufacturer text,
        model text,
        options text,
        firmware text,
        serial text,
        inverter_sunspec_model integer,
        battery_sunspec_model integer,
        battery_capacity_wh double precision CHECK (battery_capacity_wh >= 0),
        battery_capacity_ah double precision CHECK (battery_capacity_ah >= 0),
        battery_max_charge_w double precision CHECK (battery_max_charge_w >= 0),
        battery_max_discharge_w double precision CHECK (battery_max_discharge_w >= 0),
        meter_sunspec_model integer,
        agent_version text,
        python_version text,
        os text,
        inventory jsonb NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS node_inventory_model ON node_inventory (model)",
    "CREATE INDEX IF NOT EXISTS node_inventory_firmware ON node_inventory (firmware)",
    """
    CREATE TABLE IF NOT EXISTS node_inventory_history (
        id bigserial PRIMARY KEY,
        node_id text NOT NULL REFERENCES nodes (id),
        changed_at timestamptz NOT NULL,
        received_at timestamptz NOT NULL,
        changes jsonb NOT NULL,
        inventory jsonb NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS node_inventory_history_node"
    " ON node_inventory_history (node_id, changed_at DESC)",
]
VIEWS = ("node_inventory", "node_inventory_history")
# The admin organization's Grafana datasource (migration 0004) reads both tables.
ADMIN_ROLE = "wattfleet_grafana_admin"


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)
    for name in VIEWS:
        op.execute(
            f"CREATE OR REPLACE VIEW tenant_view.{name} WITH (security_barrier) AS"
            f" SELECT i.* FROM public.{name} i JOIN public.nodes n ON n.id = i.node_id"
            f" WHERE n.tenant_id = {TENANT_FILTER}"
        )
        op.execute(f"GRANT SELECT ON tenant_view.{name} TO wattfleet_tenant")
    op.execute(f"GRANT SELECT ON {', '.join(VIEWS)} TO {ADMIN_ROLE}")


def downgrade() -> None:
    for name in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS tenant_view.{name}")
    op.execute("DROP TABLE IF EXISTS node_inventory_history")
    op.execute("DROP TABLE IF EXISTS node_inventory")
