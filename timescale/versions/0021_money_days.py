"""Money per site and local day, priced once (issue 18): `money_1d`.

Every money panel summed `energy_1h`, pricing each hourly row at every query: 2.2M rows
for 1,000 sites over 90 days. Completed local days are now priced once into `money_1d`
(one row per site, tenant, local day, currency and tariff period: the energies, the
seconds observed, the money, and the day's UTC bounds), and the panels read whole days
from it and only the rest (the range's edge hours, today, days not priced yet) from
`energy_1h` (grafana/money.py), with the same figures.

- `refresh_money_1d`, a TimescaleDB job every hour, prices the local days that ended
  before both now and telemetry_1h's materialization watermark (all of them on its first
  run, and all since the last run after a longer pause), and each run prices again the
  last `reprice` (10 days: the aggregate's 9-day refresh window and a day) so late
  samples follow within a run, as in the aggregates.
- What prices history again invalidates at once: a tariff version inserted, changed or
  deleted (the sites it applies to, from the day before its `valid_from`), a site's or a
  tenant's time zone changed, a site moved to another tenant (all its days), a site
  created with an id that has history.
  A trigger deletes the site's days from there and leaves a mark in `money_1d_pending`
  (site, tenant of the rows, since): readers take `energy_1h` from the lowest mark of
  the sites they read, the job prices those days again and clears the marks.
- `money_1d_state.priced_until`: where the last run stopped; every hour more than a day
  (26 hours: the longest local day and an hour) before it, of a site without a mark, is
  in `money_1d`.
The job and the triggers take the same lock on `money_1d`, so a change committed while
the job runs is either seen by it or invalidates what it wrote.

`money_1d` is a hypertable on `day_start` (chunks of 180 days): reads are "these sites,
days in a range", served by chunk exclusion and a (node_id, day_start) index.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-01
"""

from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

# energy_1h's kWh columns (migration 0013), frozen here.
KWH = (
    "pv_kwh",
    "grid_import_kwh",
    "grid_export_kwh",
    "load_kwh",
    "battery_charge_kwh",
    "battery_discharge_kwh",
    "gap_pv_kwh",
    "gap_grid_import_kwh",
    "gap_grid_export_kwh",
)
MONEY = ("import_cost", "export_revenue", "grid_only_cost", "savings")
SUMS = ("covered_s", *KWH, *MONEY)
TABLES = ("money_1d", "money_1d_pending", "money_1d_state")
TENANT_FILTER = (
    "(SELECT tr.tenant_id FROM public.tenant_roles tr WHERE tr.role_name = current_user)"
)
ADMIN_ROLE = "wattfleet_grafana_admin"
JOB = "refresh_money_1d"
SCHEDULE = "1 hour"
REPRICE = "10 days"
# The longest local day (25 hours) and an hour: a day ending after a bound starts after it
# less this.
DAY_MARGIN = "interval '26 hours'"

MONEY_1D = f"""
CREATE TABLE IF NOT EXISTS money_1d (
    node_id text NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    tenant_id bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    local_day date NOT NULL,
    timezone text NOT NULL,
    day_start timestamptz NOT NULL,
    day_end timestamptz NOT NULL,
    -- NULL: no tariff in force (energy without money).
    currency text,
    period text,
    {", ".join(f"{column} double precision" for column in SUMS)}
)
"""

PENDING = """
CREATE TABLE IF NOT EXISTS money_1d_pending (
    node_id text NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    tenant_id bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    since timestamptz NOT NULL,
    PRIMARY KEY (node_id, tenant_id)
)
"""

# One row; -infinity: never priced.
STATE = """
CREATE TABLE IF NOT EXISTS money_1d_state (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    priced_until timestamptz NOT NULL
)
"""

# Prices the days of `filter`'s rows that end in (after, upto]: deletes what was there,
# sums energy_1h's hours per day. Dynamic, so each call is planned for its own bounds.
PRICE_DAYS = f"""
CREATE OR REPLACE FUNCTION price_money_days(p_filter text, p_after timestamptz,
    p_upto timestamptz)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format($q$
        DELETE FROM public.money_1d WHERE %s AND day_start > $1 - {DAY_MARGIN}
            AND day_end > $1 AND day_end <= $2
    $q$, p_filter) USING p_after, p_upto;
    EXECUTE format($q$
        INSERT INTO public.money_1d (node_id, tenant_id, local_day, timezone, day_start,
            day_end, currency, period, {", ".join(SUMS)})
        SELECT node_id, tenant_id, local_day, timezone, day_start, day_end, currency, period,
            {", ".join(f"sum({column})" for column in SUMS)}
        FROM (SELECT e.*, e.local_day::timestamp AT TIME ZONE e.timezone AS day_start,
                  (e.local_day + 1)::timestamp AT TIME ZONE e.timezone AS day_end
              FROM public.energy_1h e
              WHERE %s AND e.bucket > $1 - {DAY_MARGIN} AND e.bucket < $2) h
        WHERE day_end > $1 AND day_end <= $2
        GROUP BY node_id, tenant_id, local_day, timezone, day_start, day_end, currency, period
    $q$, p_filter) USING p_after, p_upto;
END
$$
"""

# telemetry_1h's hours below its watermark are materialized (the job prices no day still
# computed live from the finer aggregate).
WATERMARK = """
coalesce(_timescaledb_functions.to_timestamp(_timescaledb_functions.cagg_watermark(
    (SELECT mat_hypertable_id FROM _timescaledb_catalog.continuous_agg
     WHERE user_view_schema = 'public' AND user_view_name = 'telemetry_1h'))), '-infinity')
"""

REFRESH = f"""
CREATE OR REPLACE PROCEDURE {JOB}(job_id integer, config jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    upto timestamptz;
    recent timestamptz;
    mark record;
BEGIN
    -- The triggers take it too: a change committed meanwhile is seen here or deletes
    -- what this run writes.
    LOCK TABLE public.money_1d IN SHARE ROW EXCLUSIVE MODE;
    upto := least(date_trunc('hour', now()), {WATERMARK});
    -- Every day that ended by the last run's end is priced (all of them after a pause
    -- longer than `reprice`; all history on the first run, from -infinity).
    SELECT least(priced_until, upto - (config->>'reprice')::interval)
        INTO recent FROM public.money_1d_state;
    -- Sites with a mark older than the recent days: from their mark, one by one.
    FOR mark IN SELECT node_id, tenant_id, since FROM public.money_1d_pending
                WHERE since < recent LOOP
        PERFORM public.price_money_days(
            format('node_id = %L AND tenant_id = %s', mark.node_id, mark.tenant_id),
            mark.since, recent);
    END LOOP;
    PERFORM public.price_money_days('true', recent, upto);
    DELETE FROM public.money_1d_pending;
    UPDATE public.money_1d_state SET priced_until = upto;
END
$$
"""

# Deletes the days of `nodes` that end after `since` and marks the sites (for every tenant
# whose rows were deleted, and the site's own) as not priced from there.
INVALIDATE = f"""
CREATE OR REPLACE FUNCTION invalidate_money_days(p_nodes text[], p_since timestamptz)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE public.money_1d IN SHARE ROW EXCLUSIVE MODE;
    WITH gone AS (
        DELETE FROM public.money_1d
        WHERE node_id = ANY (p_nodes) AND day_start > p_since - {DAY_MARGIN}
            AND day_end > p_since
        RETURNING node_id, tenant_id, day_start
    )
    INSERT INTO public.money_1d_pending (node_id, tenant_id, since)
    SELECT node_id, tenant_id, min(since) FROM (
        SELECT node_id, tenant_id, least(day_start, p_since) AS since FROM gone
        UNION ALL
        SELECT id, tenant_id, p_since FROM public.nodes WHERE id = ANY (p_nodes)
    ) marks
    GROUP BY node_id, tenant_id
    ON CONFLICT (node_id, tenant_id)
        DO UPDATE SET since = least(money_1d_pending.since, EXCLUDED.since);
END
$$
"""

# A version changes prices from local midnight of its valid_from: at the earliest (UTC+14)
# the day before it, 10:00 UTC.
TARIFF_SINCE = "(({row}.valid_from - 1)::timestamp AT TIME ZONE 'UTC')"
TARIFF_SITES = (
    "ARRAY(SELECT id FROM public.nodes WHERE CASE WHEN {row}.node_id IS NULL"
    " THEN tenant_id = {row}.tenant_id ELSE id = {row}.node_id END)"
)
TARIFF_TRIGGER = f"""
CREATE OR REPLACE FUNCTION tariffs_invalidate_money() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM public.invalidate_money_days({TARIFF_SITES.format(row="OLD")},
            {TARIFF_SINCE.format(row="OLD")});
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM public.invalidate_money_days({TARIFF_SITES.format(row="NEW")},
            {TARIFF_SINCE.format(row="NEW")});
    END IF;
    RETURN NULL;
END
$$
"""

# A site's zone or tenant changed: all its days. A site created with an id that has
# history (telemetry is kept by node id): from its first hour; a new id has none, and
# marks nothing (a mark slows every fleet-wide figure until the next run). A tenant's
# zone: its sites' days, and those of sites that moved away (their history with it
# stays in its zone).
NODE_TRIGGER = """
CREATE OR REPLACE FUNCTION nodes_invalidate_money() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM public.invalidate_money_days(ARRAY[NEW.id], '-infinity');
    RETURN NULL;
END
$$
"""
NODE_CREATED_TRIGGER = """
CREATE OR REPLACE FUNCTION nodes_created_money() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM public.invalidate_money_days(ARRAY[NEW.id], first_hour)
    FROM (SELECT min(bucket) AS first_hour FROM public.telemetry_1h
          WHERE node_id = NEW.id) history
    WHERE first_hour IS NOT NULL;
    RETURN NULL;
END
$$
"""
TENANT_TRIGGER = """
CREATE OR REPLACE FUNCTION tenants_invalidate_money() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM public.invalidate_money_days(ARRAY(
        SELECT id FROM public.nodes WHERE tenant_id = NEW.id
        UNION SELECT node_id FROM public.money_1d WHERE tenant_id = NEW.id), '-infinity');
    RETURN NULL;
END
$$
"""
TRIGGERS = {
    "tariffs_money": "AFTER INSERT OR UPDATE OR DELETE ON tariffs FOR EACH ROW"
    " EXECUTE FUNCTION tariffs_invalidate_money()",
    "nodes_money_moved": "AFTER UPDATE OF timezone, tenant_id ON nodes FOR EACH ROW"
    " WHEN (OLD.timezone IS DISTINCT FROM NEW.timezone OR OLD.tenant_id <> NEW.tenant_id)"
    " EXECUTE FUNCTION nodes_invalidate_money()",
    "nodes_money_created": "AFTER INSERT ON nodes FOR EACH ROW"
    " EXECUTE FUNCTION nodes_created_money()",
    "tenants_money_zone": "AFTER UPDATE OF timezone ON tenants FOR EACH ROW"
    " WHEN (OLD.timezone IS DISTINCT FROM NEW.timezone)"
    " EXECUTE FUNCTION tenants_invalidate_money()",
}
TRIGGER_TABLES = {"tariffs_money": "tariffs", "nodes_money_moved": "nodes",
                  "nodes_money_created": "nodes", "tenants_money_zone": "tenants"}  # fmt: skip

ADD_JOB = f"""
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM timescaledb_information.jobs WHERE proc_name = '{JOB}') THEN
        PERFORM add_job('{JOB}', INTERVAL '{SCHEDULE}',
                        config => '{{"reprice": "{REPRICE}"}}'::jsonb);
    END IF;
END $$
"""


def _run(statements: list[str]) -> None:
    # Straight to the DBAPI cursor, as in 0013: no placeholder parsing of the raw SQL.
    cursor = op.get_bind().connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    for statement in statements:
        cursor.execute(statement)


def _tenant_view(name: str, filtered: bool) -> str:
    where = f" WHERE tenant_id = {TENANT_FILTER}" if filtered else ""
    return (
        f"CREATE OR REPLACE VIEW tenant_view.{name} WITH (security_barrier) AS"
        f" SELECT * FROM public.{name}{where}"
    )


def upgrade() -> None:
    statements = [
        MONEY_1D,
        "SELECT create_hypertable('money_1d', by_range('day_start', INTERVAL '180 days'),"
        " if_not_exists => true)",
        "CREATE UNIQUE INDEX IF NOT EXISTS money_1d_day ON money_1d"
        " (node_id, day_start, tenant_id, currency, period) NULLS NOT DISTINCT",
        PENDING,
        STATE,
        "INSERT INTO money_1d_state (priced_until) VALUES ('-infinity') ON CONFLICT DO NOTHING",
        PRICE_DAYS,
        REFRESH,
        INVALIDATE,
        TARIFF_TRIGGER,
        NODE_TRIGGER,
        NODE_CREATED_TRIGGER,
        TENANT_TRIGGER,
        *(f"CREATE OR REPLACE TRIGGER {name} {spec}" for name, spec in TRIGGERS.items()),
        # Sites created before this migration: priced from scratch by the first run.
        ADD_JOB,
        _tenant_view("money_1d", filtered=True),
        _tenant_view("money_1d_pending", filtered=True),
        # Where the job stopped: no tenant's data.
        _tenant_view("money_1d_state", filtered=False),
        "GRANT SELECT ON ALL TABLES IN SCHEMA tenant_view TO wattfleet_tenant",
        f"GRANT SELECT ON {', '.join(TABLES)} TO {ADMIN_ROLE}",
    ]
    _run(statements)


def downgrade() -> None:
    statements = [
        f"SELECT delete_job(job_id) FROM timescaledb_information.jobs WHERE proc_name = '{JOB}'",
        *(f"DROP TRIGGER IF EXISTS {name} ON {TRIGGER_TABLES[name]}" for name in TRIGGERS),
        "DROP FUNCTION IF EXISTS tariffs_invalidate_money()",
        "DROP FUNCTION IF EXISTS nodes_invalidate_money()",
        "DROP FUNCTION IF EXISTS nodes_created_money()",
        "DROP FUNCTION IF EXISTS tenants_invalidate_money()",
        "DROP FUNCTION IF EXISTS invalidate_money_days(text[], timestamptz)",
        f"DROP PROCEDURE IF EXISTS {JOB}(integer, jsonb)",
        "DROP FUNCTION IF EXISTS price_money_days(text, timestamptz, timestamptz)",
        *(f"DROP VIEW IF EXISTS tenant_view.{name}" for name in TABLES),
        *(f"DROP TABLE IF EXISTS {name}" for name in reversed(TABLES)),
    ]
    _run(statements)
