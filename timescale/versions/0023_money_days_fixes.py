"""Money days: a local day starts at its first instant, also where midnight comes twice;
the job runs before anything is materialized, and after a pause prices late hours again.

Migration 0021 set a priced day's `day_start` (and the day before's `day_end`) to
`local_day::timestamp AT TIME ZONE timezone`. Where clocks go back at local midnight
(Atlantic/Azores on the last Sunday of October, America/Havana on the first Sunday of
November), midnight happens twice and PostgreSQL takes the second: the day's first hour,
which energy_1h counts in that day, lay before its `day_start`, so a range starting within
that hour took the 25-hour day whole from `money_1d`, an hour before the range included.
`local_midnight(day, zone)` is the first instant of the local day; the job prices with
it, grafana/money.py finds a priced hour's day with it, and the days priced with the old
bounds are priced again (deleted and marked, as a zone change does).

The job also failed ("timestamp out of range") while `telemetry_1h` had never been
materialized (a fresh install, no telemetry yet): TimescaleDB's watermark is then its
earliest time, 4714 BC, and 0021 subtracted `reprice` from it. It now prices nothing then.
And each run prices again the `reprice` (10 days) before where the last run stopped, not
only before now: after the job was stopped for more than a day, late hours the aggregate's
policy materialized meanwhile were left as first priced.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-01
"""

from alembic import op

from timescale.earlier_migration import load

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

# The second midnight, an hour earlier, is still that day when midnight came twice (every
# clock change at midnight is of an hour). Inlined into the queries (one SELECT, stable).
LOCAL_MIDNIGHT = """
CREATE OR REPLACE FUNCTION local_midnight(p_day date, p_zone text) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN ((p_day::timestamp AT TIME ZONE p_zone) - interval '1 hour')
            AT TIME ZONE p_zone >= p_day::timestamp
        THEN (p_day::timestamp AT TIME ZONE p_zone) - interval '1 hour'
        ELSE p_day::timestamp AT TIME ZONE p_zone
    END
$$
"""
OLD_BOUNDS = (
    "e.local_day::timestamp AT TIME ZONE e.timezone",
    "(e.local_day + 1)::timestamp AT TIME ZONE e.timezone",
)
NEW_BOUNDS = (
    "public.local_midnight(e.local_day, e.timezone)",
    "public.local_midnight(e.local_day + 1, e.timezone)",
)


# Where 0021's job computes how far it prices; the guard goes right after.
UPTO = "    upto := least(date_trunc('hour', now()), "
# Nothing materialized: the watermark is TimescaleDB's earliest time (no telemetry is
# that old), out of range once `reprice` is subtracted. Nothing to price: the run ends.
NOTHING_MATERIALIZED = """
    IF upto < '0001-01-01 00:00+00' THEN
        RETURN;
    END IF;"""


# 0021 priced again the `reprice` before now, not before where the last run stopped: hours
# the aggregate's policy materialized while the job was stopped (failing) for more than a
# day, of days more than `reprice` before now, stayed as first priced.
RECENT = "least(priced_until, upto - (config->>'reprice')::interval)"
RECENT_FIXED = "least(priced_until, upto) - (config->>'reprice')::interval"


def _refresh(fixed: bool) -> str:
    # The job's pricing as 0021 wrote it: only its day bounds and guards change here.
    sql: str = load("0021_money_days.py").REFRESH
    if not fixed:
        return sql
    start = sql.index(UPTO)
    end = sql.index(";\n", start) + 1
    sql = sql[:end] + NOTHING_MATERIALIZED + sql[end:]
    assert RECENT in sql
    return sql.replace(RECENT, RECENT_FIXED)


def _price_days(bounds: tuple[str, str]) -> str:
    sql: str = load("0021_money_days.py").PRICE_DAYS
    for old, new in zip(OLD_BOUNDS, bounds, strict=True):
        assert old in sql, old
        sql = sql.replace(old, new)
    return sql


def _reprice_unless(day_start: str, day_end: str) -> str:
    """Deletes and marks the sites' days from the first priced day whose bounds are not
    these (SQL of local_day and timezone), for the job to price again."""
    return f"""
    SELECT public.invalidate_money_days(array_agg(DISTINCT node_id), min(day_start))
    FROM public.money_1d
    WHERE day_start <> {day_start} OR day_end <> {day_end}
    HAVING count(*) > 0
    """


def _run(statements: list[str]) -> None:
    # Straight to the DBAPI cursor, as in 0021: no placeholder parsing of the raw SQL.
    cursor = op.get_bind().connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    for statement in statements:
        cursor.execute(statement)


def upgrade() -> None:
    _run(
        [
            LOCAL_MIDNIGHT,
            _price_days(NEW_BOUNDS),
            _refresh(fixed=True),
            _reprice_unless(
                "public.local_midnight(local_day, timezone)",
                "public.local_midnight(local_day + 1, timezone)",
            ),
        ]
    )


def downgrade() -> None:
    _run(
        [
            _price_days(OLD_BOUNDS),
            _refresh(fixed=False),
            _reprice_unless(
                "local_day::timestamp AT TIME ZONE timezone",
                "(local_day + 1)::timestamp AT TIME ZONE timezone",
            ),
            "DROP FUNCTION IF EXISTS local_midnight(date, text)",
        ]
    )
