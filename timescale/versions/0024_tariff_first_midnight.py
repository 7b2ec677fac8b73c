"""Tariff versions start at the first midnight of their `valid_from`, also where it comes
twice.

Migration 0013's `site_tariffs` bounded each version by
`valid_from::timestamp AT TIME ZONE timezone`. Where clocks go back at local midnight
(Atlantic/Azores on the last Sunday of October, America/Havana on the first Sunday of
November), midnight happens twice and PostgreSQL takes the second (migration 0023): a
version valid from such a day began an hour late, and `energy_5m`/`energy_1h` priced the
day's first hour (which they count in that day) with the version before. The view now
bounds versions with `local_midnight` (0023), the instant the day starts everywhere else
(money_1d's `day_start`; the agent's and the control API's "in force on a local day").

The days the job priced with the old bounds are priced again: every site with a version
starting on such a day has its days from that version's start deleted and marked (as a
tariff change does). Downgrade restores 0013's view and prices those days again with it.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-01
"""

from alembic import op

from timescale.earlier_migration import load

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

OLD_BOUNDS = (
    "valid_from::timestamp AT TIME ZONE timezone AS starts_at",
    "lead(valid_from) OVER (PARTITION BY node_id ORDER BY valid_from)::timestamp\n"
    "        AT TIME ZONE timezone AS ends_at",
)
NEW_BOUNDS = (
    "public.local_midnight(valid_from, timezone) AS starts_at",
    "public.local_midnight(lead(valid_from) OVER (PARTITION BY node_id ORDER BY valid_from),\n"
    "        timezone) AS ends_at",
)


def _site_tariffs(bounds: tuple[str, str]) -> str:
    """0013's view with these bounds, replacing the one in place (same columns: the
    energy views and the tenant view on it stay)."""
    sql: str = load("0013_energy_and_money.py").SITE_TARIFFS.replace(
        "CREATE VIEW", "CREATE OR REPLACE VIEW", 1
    )
    for old, new in zip(OLD_BOUNDS, bounds, strict=True):
        assert old in sql, old
        sql = sql.replace(old, new)
    return sql


def _reprice_unless(starts_at: str) -> str:
    """Deletes and marks, for the job to price again, the days of the sites whose
    versions the view now starts elsewhere than at `starts_at` (SQL of valid_from and
    timezone), from the earliest such start."""
    return f"""
    SELECT public.invalidate_money_days(array_agg(DISTINCT node_id),
        min(least(starts_at, {starts_at})))
    FROM public.site_tariffs
    WHERE starts_at <> {starts_at}
    HAVING count(*) > 0
    """


def upgrade() -> None:
    op.execute(_site_tariffs(NEW_BOUNDS))
    op.execute(_reprice_unless("valid_from::timestamp AT TIME ZONE timezone"))


def downgrade() -> None:
    op.execute(_site_tariffs(OLD_BOUNDS))
    op.execute(_reprice_unless("public.local_midnight(valid_from, timezone)"))
