"""Tenant roles read no transaction or lock figures of the whole database either.

Migration 0008 took from PUBLIC what tells a tenant's role how much the fleet stores and
how fast it grows (sizes, statistics, the WAL position) and gave it to
`pg_read_all_stats`. The transaction counter tells the same as the WAL position: a
tenant calling `txid_current()` a minute apart reads the fleet's write rate (and uses up
a transaction id each time). So do the snapshot and control-file functions and the lock
table (every session's locks, other tenants' included). They move the same way here;
superusers and the objects' owners (the hub's services, TimescaleDB's jobs) are not
affected, and no reader of a dashboard needs them.

Valid on PostgreSQL 15-17: functions are looked up by name, and what a version lacks is
skipped.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-01
"""

from alembic import op

from timescale.earlier_migration import load

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None

MONITOR = "pg_read_all_stats"
FIGURES = (
    "txid_current",
    "txid_current_if_assigned",
    "txid_current_snapshot",
    "pg_current_xact_id",
    "pg_current_xact_id_if_assigned",
    "pg_current_snapshot",
    "pg_last_committed_xact",
    "pg_control_checkpoint",
    "pg_control_system",
    "pg_control_init",
    "pg_control_recovery",
    "pg_lock_status",
    "pg_blocking_pids",
    "pg_safe_snapshot_blocking_pids",
)
# Every overload of each, those this version has.
FUNCTIONS = f"""
    SELECT p.oid::regprocedure::text FROM pg_proc p
    WHERE p.pronamespace = 'pg_catalog'::regnamespace
      AND p.proname = ANY (ARRAY[{", ".join(f"'{name}'" for name in FIGURES)}])
"""


def _move(from_role: str, to_role: str) -> None:
    for_each = load(
        "0008_tenant_catalog_access.py"
    )._for_each  # runs a statement for each name a query gives
    for_each(FUNCTIONS, f"REVOKE EXECUTE ON FUNCTION %s FROM {from_role}")
    for_each(FUNCTIONS, f"GRANT EXECUTE ON FUNCTION %s TO {to_role}")
    op.execute(f"REVOKE SELECT ON pg_catalog.pg_locks FROM {from_role}")
    op.execute(f"GRANT SELECT ON pg_catalog.pg_locks TO {to_role}")


def upgrade() -> None:
    _move("PUBLIC", MONITOR)


def downgrade() -> None:
    _move(MONITOR, "PUBLIC")
