"""Energy from what each sample covers, money from the hub's tariffs, days in local time.

- `telemetry` gains each sample's energy part (contract/fields.py: interval_s, covered_s
  and six energies in Wh, counted by the agent from the device's counters or from power
  over the time the sample covers) and `optimizer_decisions` the coordinator's mode,
  reason and setpoints.
- The continuous aggregates are rebuilt: energies are sums of the samples' energies (no
  longer mean power x the whole bucket), `covered_s` sums the seconds observed (the
  bucket's data coverage), means roll up weighted by sample count, and money leaves them:
  a price is not a property of a sample but of the site's tariff, which may be corrected.
  The aggregates stay in UTC buckets: a 5-minute or hourly bucket is a local one too in
  every zone whose offset is whole hours (local days are made of hours below).
- `site_zones`: each site's effective time zone; `site_tariffs`: each site's effective
  tariff timeline as instants (its own versions once the first is in force, before that
  its tenant's; each from local midnight of valid_from to the next one's; `ends_at` NULL
  for the one in force until further notice).
- `energy_5m`, `energy_1h`: an aggregate's buckets with their local time, local day and
  the tariff in force: import cost = import kWh x import price, export revenue = export
  kWh x export price, grid-only cost = load kWh x import price, savings = grid-only cost
  - (import cost - export revenue). Buckets without a tariff keep their energy; their
  money is NULL. docs/energy-and-money.md has the formulas with a worked day.

Aggregates of the old shape that hold history older than the raw telemetry (retention
dropped the rows they came from) are kept as `legacy_telemetry_5m/_1h/_1d`, frozen
(UTC days, money at the agents' prices); otherwise they are dropped. Their refresh
policies go; the 400-day retention of the 5-minute one stays.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30
"""

from alembic import op

from timescale.earlier_migration import load, on_aggregates

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

ENERGY_COLUMNS = (
    "interval_s",
    "covered_s",
    "pv_wh",
    "grid_import_wh",
    "grid_export_wh",
    "load_wh",
    "battery_charge_wh",
    "battery_discharge_wh",
    "gap_pv_wh",
    "gap_grid_import_wh",
    "gap_grid_export_wh",
)
DECISION_COLUMNS = (
    ("mode", "text"),
    ("reason", "text"),
    ("battery_setpoint_w", "double precision"),
    ("target_soc_percent", "double precision"),
)
AGGREGATES = ("telemetry_5m", "telemetry_1h", "telemetry_1d")
# kWh per aggregate column: (aggregate column, telemetry column in Wh, the power it is
# estimated from for samples that carry no energy).
ENERGIES = (
    ("pv_kwh", "pv_wh", "solar_power_w"),
    ("grid_import_kwh", "grid_import_wh", "(grid_power_w + abs(grid_power_w)) / 2"),
    ("grid_export_kwh", "grid_export_wh", "(abs(grid_power_w) - grid_power_w) / 2"),
    ("load_kwh", "load_wh", "load_power_w"),
    ("battery_charge_kwh", "battery_charge_wh", "(abs(battery_power_w) - battery_power_w) / 2"),
    (
        "battery_discharge_kwh",
        "battery_discharge_wh",
        "(battery_power_w + abs(battery_power_w)) / 2",
    ),
)
# Counted over gaps: never estimated.
GAP_ENERGIES = (
    ("gap_pv_kwh", "gap_pv_wh"),
    ("gap_grid_import_kwh", "gap_grid_import_wh"),
    ("gap_grid_export_kwh", "gap_grid_export_wh"),
)
ALL_KWH = tuple(kwh for kwh, *_ in ENERGIES + GAP_ENERGIES)
MEANS = ("battery_power_w", "solar_power_w", "grid_power_w", "load_power_w")
# A sample without an energy part (agents before it; every row stored before this
# migration).
LEGACY = "interval_s IS NULL"


def _energy_5m(kwh: str, wh: str, power: str) -> str:
    """A 5-minute bucket's kWh: its samples' energies, plus for samples without an energy
    part the old estimate (their mean power over their share of the bucket); NULL when
    neither says anything."""
    legacy_share = f"count(*) FILTER (WHERE {LEGACY})::float8 / count(*)"
    estimate = f"avg({power}) FILTER (WHERE {LEGACY}) * 300 * {legacy_share} / 3600"
    return (
        f"CASE WHEN count({wh}) + count({power}) FILTER (WHERE {LEGACY}) = 0 THEN NULL"
        f" ELSE (coalesce(sum({wh}), 0) + coalesce({estimate}, 0)) / 1000.0 END AS {kwh}"
    )


CAGG_OPTIONS = "timescaledb.continuous, timescaledb.materialized_only = false"

TELEMETRY_5M = f"""
CREATE MATERIALIZED VIEW IF NOT EXISTS telemetry_5m WITH ({CAGG_OPTIONS}) AS
SELECT time_bucket(INTERVAL '5 minutes', ts) AS bucket, node_id, tenant_id,
    count(*) AS sample_count,
    avg(soc_percent) AS soc_avg, min(soc_percent) AS soc_min, max(soc_percent) AS soc_max,
    {", ".join(f"avg({m}) AS {m}" for m in MEANS)},
    sum(covered_s) AS covered_s,
    {", ".join(_energy_5m(kwh, wh, power) for kwh, wh, power in ENERGIES)},
    {", ".join(f"sum({wh}) / 1000.0 AS {kwh}" for kwh, wh in GAP_ENERGIES)}
FROM telemetry
GROUP BY 1, node_id, tenant_id
WITH NO DATA
"""


def _weighted(mean: str) -> str:
    """A finer aggregate's means, weighted by their buckets' sample counts."""
    return (
        f"sum({mean} * sample_count) / nullif(sum(sample_count)"
        f" FILTER (WHERE {mean} IS NOT NULL), 0)"
    )


def _rollup(name: str, source: str, width: str) -> str:
    return f"""
    CREATE MATERIALIZED VIEW IF NOT EXISTS {name} WITH ({CAGG_OPTIONS}) AS
    SELECT time_bucket(INTERVAL '{width}', bucket) AS bucket, node_id, tenant_id,
        sum(sample_count)::bigint AS sample_count,
        {_weighted("soc_avg")} AS soc_avg, min(soc_min) AS soc_min, max(soc_max) AS soc_max,
        {", ".join(f"{_weighted(m)} AS {m}" for m in MEANS)},
        sum(covered_s) AS covered_s,
        {", ".join(f"sum({kwh}) AS {kwh}" for kwh in ALL_KWH)}
    FROM {source}
    GROUP BY 1, node_id, tenant_id
    WITH NO DATA
    """


# As migration 0001 set them: refresh windows reach back past the edge buffer's 7 days.
POLICIES = [
    "SELECT add_continuous_aggregate_policy('telemetry_5m', start_offset => INTERVAL '8 days',"
    " end_offset => INTERVAL '5 minutes', schedule_interval => INTERVAL '5 minutes',"
    " if_not_exists => true)",
    "SELECT add_continuous_aggregate_policy('telemetry_1h', start_offset => INTERVAL '9 days',"
    " end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '15 minutes',"
    " if_not_exists => true)",
    "SELECT add_continuous_aggregate_policy('telemetry_1d', start_offset => INTERVAL '10 days',"
    " end_offset => INTERVAL '1 day', schedule_interval => INTERVAL '1 hour',"
    " if_not_exists => true)",
    "SELECT add_retention_policy('telemetry_5m', INTERVAL '400 days', if_not_exists => true)",
]
# Each aggregate's refresh ends where its policy's does: a bucket still filling stays to
# real-time aggregation.
END_OFFSETS = {"telemetry_5m": "5 minutes", "telemetry_1h": "1 hour", "telemetry_1d": "1 day"}

SITE_ZONES = """
CREATE VIEW site_zones AS
SELECT n.id AS node_id, n.tenant_id, coalesce(n.timezone, t.timezone) AS timezone
FROM nodes n JOIN tenants t ON t.id = n.tenant_id
"""

# A site's own versions once the first of them is in force; before it, its tenant's.
SITE_TARIFFS = """
CREATE VIEW site_tariffs AS
WITH versions AS (
    SELECT z.node_id, z.tenant_id, z.timezone, v.valid_from, v.currency, v.import_prices,
        v.export_prices, v.import_periods
    FROM site_zones z
    LEFT JOIN LATERAL (SELECT min(o.valid_from) AS first_own FROM tariffs o
                       WHERE o.node_id = z.node_id) own ON true
    JOIN tariffs v ON v.node_id = z.node_id
        OR (v.node_id IS NULL AND v.tenant_id = z.tenant_id
            AND (own.first_own IS NULL OR v.valid_from < own.first_own))
)
SELECT node_id, tenant_id, timezone, valid_from, currency, import_prices, export_prices,
    import_periods,
    valid_from::timestamp AT TIME ZONE timezone AS starts_at,
    lead(valid_from) OVER (PARTITION BY node_id ORDER BY valid_from)::timestamp
        AT TIME ZONE timezone AS ends_at
FROM versions
"""


def _energy_view(name: str, source: str, bucket_seconds: int) -> str:
    # A plain join with the (small) tariff timelines, not a lateral lookup per bucket, so
    # the planner hashes them once; a query's bucket range still reaches the aggregate.
    import_price, export_price = "b.import_prices[b.slot]", "b.export_prices[b.slot]"
    return f"""
    CREATE VIEW {name} AS
    -- The timelines once per query: a join the planner misjudges as a nested loop then
    -- scans a computed list, instead of computing the view again for every bucket.
    WITH tariffs_in_force AS MATERIALIZED (SELECT * FROM site_tariffs)
    SELECT b.bucket, b.node_id, b.tenant_id, b.timezone, b.local_time, b.local_time::date
            AS local_day,
        b.sample_count, b.soc_avg, b.soc_min, b.soc_max,
        {", ".join(f"b.{m}" for m in MEANS)},
        b.covered_s, least(b.covered_s / {bucket_seconds}.0, 1.0) AS coverage,
        {", ".join(f"b.{kwh}" for kwh in ALL_KWH)},
        b.currency, {import_price} AS import_price, {export_price} AS export_price,
        b.import_periods[b.slot] AS period,
        b.grid_import_kwh * {import_price} AS import_cost,
        b.grid_export_kwh * {export_price} AS export_revenue,
        b.load_kwh * {import_price} AS grid_only_cost,
        b.load_kwh * {import_price} - (coalesce(b.grid_import_kwh * {import_price}, 0)
            - coalesce(b.grid_export_kwh * {export_price}, 0)) AS savings
    FROM (
        SELECT a.*, zone.timezone, l.local_time, t.currency, t.import_prices,
            t.export_prices, t.import_periods,
            -- The bucket's hour of the week in local time, 1-based as arrays are.
            (extract(isodow FROM l.local_time)::int - 1) * 24
                + extract(hour FROM l.local_time)::int + 1 AS slot
        FROM {source} a
        JOIN site_zones z ON z.node_id = a.node_id
        JOIN tenants owner ON owner.id = a.tenant_id
        -- History from before a site moved to another tenant stays in its old tenant's
        -- zone and is priced by none of the new tenant's tariffs (money NULL).
        CROSS JOIN LATERAL (
            SELECT CASE WHEN z.tenant_id = a.tenant_id THEN z.timezone ELSE owner.timezone END
                AS timezone
        ) zone
        CROSS JOIN LATERAL (SELECT a.bucket AT TIME ZONE zone.timezone AS local_time) l
        LEFT JOIN tariffs_in_force t ON t.node_id = a.node_id AND t.tenant_id = a.tenant_id
            AND a.bucket >= t.starts_at AND (t.ends_at IS NULL OR a.bucket < t.ends_at)
    ) b
    """


TENANT_FILTER = (
    "(SELECT tr.tenant_id FROM public.tenant_roles tr WHERE tr.role_name = current_user)"
)
ADMIN_ROLE = "wattfleet_grafana_admin"
# Every relation of the analytics a dashboard may read, each with its tenant view.
VIEWS = ("site_zones", "site_tariffs", "energy_5m", "energy_1h")
ANALYTICS = (*AGGREGATES, *VIEWS)
# Base relations whose tenant views are `SELECT *` and so must be re-created to show
# the new columns.
WIDENED = ("telemetry", "optimizer_decisions")

# Migration 0001's aggregates hold money; this migration's do not.
OLD_SHAPE = """
SELECT EXISTS (SELECT 1 FROM pg_attribute
               WHERE attrelid = to_regclass('telemetry_5m') AND attname = 'cost')
"""
NEW_SHAPE = """
SELECT EXISTS (SELECT 1 FROM pg_attribute
               WHERE attrelid = to_regclass('telemetry_5m') AND attname = 'covered_s')
"""
HISTORY_BEYOND_RAW = """
SELECT EXISTS (SELECT 1 FROM telemetry_5m
               WHERE bucket < coalesce((SELECT min(ts) FROM telemetry), 'infinity'))
"""


def _tenant_view(name: str) -> str:
    return (
        f"CREATE OR REPLACE VIEW tenant_view.{name} WITH (security_barrier) AS"
        f" SELECT * FROM public.{name} WHERE tenant_id = {TENANT_FILTER}"
    )


def _run(statements: list[str]) -> None:
    # Straight to the DBAPI cursor, as in 0001: no placeholder parsing of the raw SQL.
    cursor = op.get_bind().connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    for statement in statements:
        cursor.execute(statement)


def _scalar(sql: str) -> object:
    cursor = op.get_bind().connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    cursor.execute(sql)
    row = cursor.fetchone()
    assert row is not None
    return row[0]


def _retire_old_aggregates() -> list[str]:
    # What depends on the aggregates goes first (all of it, when this runs again).
    statements = [f"DROP VIEW IF EXISTS tenant_view.{name}" for name in ANALYTICS]
    statements += [f"DROP VIEW IF EXISTS {name}" for name in reversed(VIEWS)]
    if not _scalar(OLD_SHAPE):
        # Run again over its own aggregates: they stay, with what they hold.
        return statements
    if not _scalar(HISTORY_BEYOND_RAW):
        return statements + [f"DROP MATERIALIZED VIEW {name}" for name in reversed(AGGREGATES)]
    for name in AGGREGATES:
        statements += [
            f"SELECT remove_continuous_aggregate_policy('{name}')",
            f"ALTER MATERIALIZED VIEW {name} SET (timescaledb.materialized_only = true)",
            f"ALTER MATERIALIZED VIEW {name} RENAME TO legacy_{name}",
        ]
    return statements


def _materialize() -> None:
    """Fills the aggregates from all the raw telemetry kept: they are created empty and
    their policies reach back only 8-10 days, so older raw days would be neither
    materialized nor computed live. Refreshes run outside a transaction. On a large hub
    this takes a while (docs/operations.md, upgrading)."""
    with op.get_context().autocommit_block():
        for name in AGGREGATES:
            op.execute(
                f"CALL refresh_continuous_aggregate('{name}', NULL,"
                f" now() - INTERVAL '{END_OFFSETS[name]}')"
            )


def upgrade() -> None:
    # Materialize only aggregates this run creates: refreshing existing ones over all
    # time would drop what they hold beyond the raw data's retention.
    creates = not _scalar(NEW_SHAPE)
    statements = _retire_old_aggregates()
    statements += [
        f"ALTER TABLE telemetry ADD COLUMN IF NOT EXISTS {c} double precision"
        for c in ENERGY_COLUMNS
    ]
    statements += [
        f"ALTER TABLE optimizer_decisions ADD COLUMN IF NOT EXISTS {c} {t}"
        for c, t in DECISION_COLUMNS
    ]
    statements += [_tenant_view(name) for name in WIDENED]
    statements += [
        TELEMETRY_5M,
        _rollup("telemetry_1h", "telemetry_5m", "1 hour"),
        _rollup("telemetry_1d", "telemetry_1h", "1 day"),
        *on_aggregates(POLICIES),
        SITE_ZONES,
        SITE_TARIFFS,
        _energy_view("energy_5m", "telemetry_5m", 300),
        _energy_view("energy_1h", "telemetry_1h", 3600),
        *(_tenant_view(name) for name in ANALYTICS),
        "GRANT SELECT ON ALL TABLES IN SCHEMA tenant_view TO wattfleet_tenant",
        f"GRANT SELECT ON {', '.join(ANALYTICS)} TO {ADMIN_ROLE}",
    ]
    _run(statements)
    if creates:
        _materialize()


def downgrade() -> None:
    # The aggregates of the old shape, with migration 0001's own SQL.
    old = load("0001_telemetry_schema.py")
    legacy = _scalar("SELECT to_regclass('legacy_telemetry_5m') IS NOT NULL")
    statements = [f"DROP VIEW IF EXISTS tenant_view.{name}" for name in ANALYTICS]
    statements += [
        *(f"DROP VIEW IF EXISTS {name}" for name in reversed(VIEWS)),
        *(f"DROP MATERIALIZED VIEW IF EXISTS {name}" for name in reversed(AGGREGATES)),
        *(f"DROP VIEW IF EXISTS tenant_view.{name}" for name in WIDENED),
        *(f"ALTER TABLE telemetry DROP COLUMN IF EXISTS {c}" for c in ENERGY_COLUMNS),
        *(
            f"ALTER TABLE optimizer_decisions DROP COLUMN IF EXISTS {c}"
            for c, _ in DECISION_COLUMNS
        ),
        *(_tenant_view(name) for name in WIDENED),
    ]
    if legacy:
        for name in AGGREGATES:
            statements += [
                f"ALTER MATERIALIZED VIEW legacy_{name} RENAME TO {name}",
                f"ALTER MATERIALIZED VIEW {name} SET (timescaledb.materialized_only = false)",
            ]
        statements += [p for p in old.POLICIES if "continuous_aggregate_policy" in p]
    else:
        statements += old.AGGREGATES + [
            p for p in old.POLICIES if "continuous_aggregate_policy" in p or "telemetry_5m" in p
        ]
        # Their history beyond the raw data is lost: said in docs/operations.md.
    statements += [_tenant_view(name) for name in AGGREGATES]
    statements += [
        "GRANT SELECT ON ALL TABLES IN SCHEMA tenant_view TO wattfleet_tenant",
        f"GRANT SELECT ON {', '.join(AGGREGATES)} TO {ADMIN_ROLE}",
    ]
    _run(statements)
    if not legacy:
        _materialize()
