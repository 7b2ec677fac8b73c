"""Telemetry and its aggregates stored as fixed-point integers; raw chunks of 6 hours,
compressed 2 hours after they end (issue 18: storage per site under 20 MB).

Measured on realistic 5-second data (docs/benchmarks.md, "Storage per site"): a float
whose mantissa is full (5.004 s, 3.459 Wh, a mean power) compresses to ~7 bytes, the same
value as the integer of its resolution to 1-2; a compressed raw row went from 55 bytes to
22, a 5-minute row from 94 to 29, and the day kept uncompressed was a fifth of a site's
storage.

- `telemetry`: the energy part (`interval_ms`, `covered_ms` int4; the energies in mWh,
  int8, `pv_mwh`...), `battery_voltage_mv` (int4) and the four powers (whole W, int4:
  `battery_w`, `solar_w`, `grid_w`, `load_w`) in new columns, which the collector writes
  (contract/fields.py `FixedPoint`). The float columns they replace stay, NULL in new
  rows, for the rows written before this migration: raw retention (30 days) empties
  them, and a later migration drops them. No row is rewritten (compressed chunks would
  have to be decompressed).
- `telemetry_5m_fixed`, `_1h_fixed`, `_1d_fixed`: the continuous aggregates, in integers
  (mWh, ms, 0.1 % of SOC, whole W), reading a float column where the new one is NULL.
  Every bucket the old aggregates hold is copied across, converted, history beyond the
  raw rows included; the new ones take over the old ones' refresh, retention and
  compression policies, and their first refresh runs recompute the refresh windows.
- `telemetry_5m`, `_1h`, `_1d` are now views over them, with the columns and units they
  had (kWh, seconds, %, W as double precision), so `energy_5m`, `energy_1h`, the tenant
  views and every dashboard read what they read. A refresh by hand names the `_fixed`
  aggregate (docs/runbook.md), and the money job takes `telemetry_1h_fixed`'s watermark.
- Raw chunks of 6 hours (new chunks), compressed 2 hours after they end: a site's raw
  rows are uncompressed for 2 to 9 hours instead of 1 to 2 days (an uncompressed row
  takes ~450 bytes with its indexes, a compressed one ~24). Late samples land in
  compressed chunks, as they already did after a day (migration 0020).

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-01
"""

from typing import Any, NamedTuple

from alembic import op

from timescale.earlier_migration import load

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None

# Each retyped column: (its name as sent, its stored name, type, scale), frozen here.
ENERGIES_WH = (
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
POWERS = ("battery_power_w", "solar_power_w", "grid_power_w", "load_power_w")
RETYPED = (
    ("battery_voltage", "battery_voltage_mv", "integer", 1000),
    *((power, power.removesuffix("_power_w") + "_w", "integer", 1) for power in POWERS),
    ("interval_s", "interval_ms", "integer", 1000),
    ("covered_s", "covered_ms", "integer", 1000),
    *((wh, f"{wh.removesuffix('_wh')}_mwh", "bigint", 1000) for wh in ENERGIES_WH),
)
STORED = {sent: (stored, scale) for sent, stored, _, scale in RETYPED}

AGGREGATES = ("telemetry_5m", "telemetry_1h", "telemetry_1d")
FIXED = {name: f"{name}_fixed" for name in AGGREGATES}
# The energy views over the aggregates, and the tenant views of the aggregates and of
# telemetry (`SELECT *`: made again to show the new columns), each dropped and made
# again around the change.
ENERGY_VIEWS = {"energy_5m": ("telemetry_5m", 300), "energy_1h": ("telemetry_1h", 3600)}
TENANT_VIEWS = ("telemetry", *AGGREGATES, *ENERGY_VIEWS)
ADMIN_ROLE = "wattfleet_grafana_admin"

# The aggregates' kWh columns: (kWh column, the Wh column it sums, the power it is
# estimated from for samples without an energy part), as migration 0013 made them.
ENERGY_KWH = (
    ("pv_kwh", "pv_wh", "solar_power_w"),
    ("grid_import_kwh", "grid_import_wh", "({grid} + abs({grid})) / 2"),
    ("grid_export_kwh", "grid_export_wh", "(abs({grid}) - {grid}) / 2"),
    ("load_kwh", "load_wh", "load_power_w"),
    ("battery_charge_kwh", "battery_charge_wh", "(abs({battery}) - {battery}) / 2"),
    ("battery_discharge_kwh", "battery_discharge_wh", "({battery} + abs({battery})) / 2"),
)
GAP_KWH = (
    ("gap_pv_kwh", "gap_pv_wh"),
    ("gap_grid_import_kwh", "gap_grid_import_wh"),
    ("gap_grid_export_kwh", "gap_grid_export_wh"),
)
SOC = ("soc_avg", "soc_min", "soc_max")


def _mwh(kwh: str) -> str:
    """The integer aggregates' column for a kWh one: `pv_kwh` -> `pv_mwh`."""
    return f"{kwh.removesuffix('_kwh')}_mwh"


CAGG_OPTIONS = "timescaledb.continuous, timescaledb.materialized_only = false"
WIDTHS = {"telemetry_5m": "5 minutes", "telemetry_1h": "1 hour", "telemetry_1d": "1 day"}

# Policies as migrations 0013 and 0016 set them on the aggregates (refresh windows reach
# back past the edge buffer's week; compression after them).
REFRESH = {
    "telemetry_5m": ("8 days", "5 minutes", "5 minutes"),
    "telemetry_1h": ("9 days", "1 hour", "15 minutes"),
    "telemetry_1d": ("10 days", "1 day", "1 hour"),
}
CHUNKS = {"telemetry_5m": "10 days", "telemetry_1h": "30 days", "telemetry_1d": "365 days"}
COMPRESS_AFTER = {"telemetry_5m": "14 days", "telemetry_1h": "30 days"}
RETENTION = {"telemetry_5m": "400 days"}

RAW_CHUNK = {"upgrade": "6 hours", "downgrade": "1 day"}
RAW_COMPRESS_AFTER = {"upgrade": "2 hours", "downgrade": "1 day"}


def _value(sent: str) -> str:
    """A retyped column's value in the stored units: the new column, else the float
    one's scaled (rows written before this migration)."""
    stored, scale = STORED[sent]
    return f"coalesce({stored}, round({sent} * {scale}))"


def _power(power: str) -> str:
    return f"coalesce({STORED[power][0]}, {power})"


# A sample without an energy part (agents before migration 0013; rows stored before it).
NO_ENERGY = "interval_ms IS NULL AND interval_s IS NULL"


def _mwh_5m(column: str, wh: str, power: str) -> str:
    """A 5-minute bucket's mWh: its samples' energies, plus for samples without an energy
    part the estimate migration 0013 gave (their mean power over their share of the
    bucket); NULL when neither says anything. Sums of floats holding integers: exact."""
    power = power.format(grid=_power("grid_power_w"), battery=_power("battery_power_w"))
    power = _power(power) if power in POWERS else power
    share = f"count(*) FILTER (WHERE {NO_ENERGY})::float8 / count(*)"
    estimate = f"avg({power}) FILTER (WHERE {NO_ENERGY}) * 300 * {share} / 3.6"
    value = _value(wh)
    return (
        f"CASE WHEN count({value}) + count({power}) FILTER (WHERE {NO_ENERGY}) = 0 THEN NULL"
        f" ELSE round(coalesce(sum({value}), 0) + coalesce({estimate}, 0))::bigint"
        f" END AS {column}"
    )


class Column(NamedTuple):
    """A value column of the integer aggregates and the old column it stands for."""

    name: str
    pg_type: str
    scale: int  # its units per the old column's
    old: str
    rollup: str  # how the coarser aggregates take it: mean, min, max or sum


COLUMNS = (
    Column("soc_avg_permille", "smallint", 10, "soc_avg", "mean"),
    Column("soc_min_permille", "smallint", 10, "soc_min", "min"),
    Column("soc_max_permille", "smallint", 10, "soc_max", "max"),
    *(Column(power, "integer", 1, power, "mean") for power in POWERS),
    Column("covered_ms", "bigint", 1000, "covered_s", "sum"),
    *(
        Column(_mwh(kwh), "bigint", 1_000_000, kwh, "sum")
        for kwh in [kwh for kwh, *_ in ENERGY_KWH] + [kwh for kwh, _ in GAP_KWH]
    ),
)
NAMES = ", ".join(c.name for c in COLUMNS)
OLD_NAMES = ", ".join(c.old for c in COLUMNS)
# The old columns from an integer aggregate's, and the other way round.
AS_OLD = ", ".join(f"{c.name}::float8 / {c.scale} AS {c.old}" for c in COLUMNS)
AS_FIXED = ", ".join(f"round({c.old} * {c.scale})::{c.pg_type} AS {c.name}" for c in COLUMNS)


FIXED_5M = f"""
CREATE MATERIALIZED VIEW {FIXED["telemetry_5m"]} WITH ({CAGG_OPTIONS}) AS
SELECT time_bucket(INTERVAL '5 minutes', ts) AS bucket, node_id, tenant_id,
    count(*) AS sample_count,
    round(avg(soc_percent) * 10)::smallint AS soc_avg_permille,
    round(min(soc_percent) * 10)::smallint AS soc_min_permille,
    round(max(soc_percent) * 10)::smallint AS soc_max_permille,
    {", ".join(f"round(avg({_power(p)}))::integer AS {p}" for p in POWERS)},
    round(sum({_value("covered_s")}))::bigint AS covered_ms,
    {", ".join(_mwh_5m(_mwh(kwh), wh, p) for kwh, wh, p in ENERGY_KWH)},
    {", ".join(f"round(sum({_value(wh)}))::bigint AS {_mwh(kwh)}" for kwh, wh in GAP_KWH)}
FROM telemetry
GROUP BY 1, node_id, tenant_id
WITH NO DATA
"""


def _rollup(column: Column) -> str:
    if column.rollup != "mean":
        # A sum of bigints is numeric in PostgreSQL.
        cast = "::bigint" if column.rollup == "sum" else ""
        return f"{column.rollup}({column.name}){cast} AS {column.name}"
    # A finer aggregate's means, weighted by their buckets' sample counts.
    return (
        f"round(sum({column.name}::float8 * sample_count) / nullif(sum(sample_count)"
        f" FILTER (WHERE {column.name} IS NOT NULL), 0))::{column.pg_type} AS {column.name}"
    )


def _fixed_rollup(name: str) -> str:
    source = FIXED["telemetry_5m" if name == "telemetry_1h" else "telemetry_1h"]
    return f"""
    CREATE MATERIALIZED VIEW {FIXED[name]} WITH ({CAGG_OPTIONS}) AS
    SELECT time_bucket(INTERVAL '{WIDTHS[name]}', bucket) AS bucket, node_id, tenant_id,
        sum(sample_count)::bigint AS sample_count, {", ".join(_rollup(c) for c in COLUMNS)}
    FROM {source}
    GROUP BY 1, node_id, tenant_id
    WITH NO DATA
    """


def _view(name: str) -> str:
    """The aggregate as it was: its columns and units, over the integer one."""
    return (
        f"CREATE VIEW {name} AS SELECT bucket, node_id, tenant_id, sample_count, {AS_OLD}"
        f" FROM {FIXED[name]}"
    )


def _cursor() -> Any:
    # Straight to the DBAPI cursor, as in 0013: no placeholder parsing of the raw SQL.
    return op.get_bind().connection.dbapi_connection.cursor()  # type: ignore[union-attr]


def _materialization(view: str) -> str:
    """The hypertable that holds a continuous aggregate's materialized rows."""
    cursor = _cursor()
    cursor.execute(
        "SELECT format('%%I.%%I', h.schema_name, h.table_name)"
        " FROM _timescaledb_catalog.continuous_agg a"
        " JOIN _timescaledb_catalog.hypertable h ON h.id = a.mat_hypertable_id"
        " WHERE a.user_view_schema = 'public' AND a.user_view_name = %s",
        (view,),
    )
    row = cursor.fetchone()
    assert row is not None, view
    return str(row[0])


def _run(statements: list[str]) -> None:
    cursor = _cursor()
    for statement in statements:
        cursor.execute(statement)


def _policies(view: str, name: str) -> list[str]:
    """`view` (an aggregate) with the chunks and policies `name`'s had: chunks set before
    it holds rows."""
    start, end, schedule = REFRESH[name]
    statements = [
        f"SELECT set_chunk_time_interval('{view}', INTERVAL '{CHUNKS[name]}')",
        f"SELECT add_continuous_aggregate_policy('{view}', start_offset => INTERVAL"
        f" '{start}', end_offset => INTERVAL '{end}', schedule_interval => INTERVAL"
        f" '{schedule}')",
    ]
    if name in RETENTION:
        statements.append(f"SELECT add_retention_policy('{view}', INTERVAL '{RETENTION[name]}')")
    if name in COMPRESS_AFTER:
        statements += [
            f"ALTER MATERIALIZED VIEW {view} SET (timescaledb.compress = true,"
            " timescaledb.compress_segmentby = 'node_id',"
            " timescaledb.compress_orderby = 'bucket')",
            f"SELECT add_compression_policy('{view}', compress_after => INTERVAL"
            f" '{COMPRESS_AFTER[name]}')",
        ]
    return statements


def _copy(source: str, target: str, columns: str, values: str) -> str:
    """Every materialized row of aggregate `source` into aggregate `target`'s
    materialization, converted (`values`, SQL of the source's columns)."""
    return (
        f"INSERT INTO {_materialization(target)} (bucket, node_id, tenant_id, sample_count,"
        f" {columns}) SELECT bucket, node_id, tenant_id, sample_count, {values}"
        f" FROM {_materialization(source)}"
    )


MAT_ID = (
    "(SELECT mat_hypertable_id FROM _timescaledb_catalog.continuous_agg"
    " WHERE user_view_schema = 'public' AND user_view_name = '{view}')"
)
WATERMARKS = "_timescaledb_catalog.continuous_aggs_watermark"
INVALIDATIONS = "_timescaledb_catalog.continuous_aggs_materialization_invalidation_log"
THRESHOLDS = "_timescaledb_catalog.continuous_aggs_invalidation_threshold"


def _carry_state(old: str, new: str, name: str) -> list[str]:
    """Aggregate `new` (holding `old`'s rows) takes over where `old` stood, in
    TimescaleDB's own catalog (2.11 and later):
    - its watermark, where live aggregation starts: the rows copied below it are what
      its real-time view shows (a refresh would set it only from a window holding raw
      rows, which an upgrade with the collector stopped does not have);
    - what is left to refresh: `old`'s pending invalidations, and the whole of its
      refresh policy's window, so its first runs compute that again from the raw rows
      (late samples since `old` last ran included). A new aggregate holds all time as
      invalid: a refresh by hand over a range older than the raw rows would then have
      replaced the copied history with nothing;
    - the invalidation threshold of its rows, for the aggregate that rolls it up."""
    old_id, new_id = MAT_ID.format(view=old), MAT_ID.format(view=new)
    window = f"now() - INTERVAL '{REFRESH[name][0]}'"
    return [
        f"UPDATE {WATERMARKS} SET watermark ="
        f" _timescaledb_functions.cagg_watermark({old_id}) WHERE mat_hypertable_id = {new_id}",
        f"DELETE FROM {INVALIDATIONS} WHERE materialization_id = {new_id}",
        f"INSERT INTO {INVALIDATIONS} (materialization_id, lowest_modified_value,"
        " greatest_modified_value)"
        f" SELECT {new_id}, lowest_modified_value, greatest_modified_value FROM {INVALIDATIONS}"
        f" WHERE materialization_id = {old_id}"
        f" UNION ALL SELECT {new_id}, _timescaledb_functions.to_unix_microseconds({window}),"
        " 9223372036854775807",
        # Below its threshold, changes to an aggregate's rows are logged for the one that
        # rolls it up: the new one's is still TimescaleDB's earliest time, so without
        # the old one's the hourly and daily aggregates would never see what the finer
        # one recomputes, such as a backfill weeks old.
        f"INSERT INTO {THRESHOLDS} (hypertable_id, watermark) SELECT {new_id}, watermark"
        f" FROM {THRESHOLDS} WHERE hypertable_id = {old_id}"
        " ON CONFLICT (hypertable_id) DO UPDATE SET watermark = EXCLUDED.watermark",
        # A TimescaleDB whose catalog keeps these elsewhere would leave the copied rows
        # hidden behind an empty watermark: stop here instead.
        f"DO $$ BEGIN IF (SELECT watermark FROM {WATERMARKS}"
        f" WHERE mat_hypertable_id = {new_id}) IS DISTINCT FROM"
        f" _timescaledb_functions.cagg_watermark({old_id})"
        f" THEN RAISE EXCEPTION '{new} did not take over the watermark of {old}'; END IF; END $$",
    ]


def _dependents() -> list[str]:
    statements = [f"DROP VIEW IF EXISTS tenant_view.{name}" for name in TENANT_VIEWS]
    return statements + [f"DROP VIEW IF EXISTS {name}" for name in ENERGY_VIEWS]


def _views(aggregates_are_views: bool) -> list[str]:
    """The views over the aggregates (and over them, the energy and tenant views)."""
    energy_and_money = load("0013_energy_and_money.py")
    statements = [_view(name) for name in AGGREGATES] if aggregates_are_views else []
    statements += [
        energy_and_money._energy_view(name, source, seconds)
        for name, (source, seconds) in ENERGY_VIEWS.items()
    ]
    statements += [energy_and_money._tenant_view(name) for name in TENANT_VIEWS]
    statements += [
        "GRANT SELECT ON ALL TABLES IN SCHEMA tenant_view TO wattfleet_tenant",
        f"GRANT SELECT ON {', '.join((*AGGREGATES, *ENERGY_VIEWS))} TO {ADMIN_ROLE}",
    ]
    if aggregates_are_views:
        statements.append(f"GRANT SELECT ON {', '.join(FIXED.values())} TO {ADMIN_ROLE}")
    return statements


def _money_job(watermark_of: str) -> str:
    """The money job (migration 0023) taking `watermark_of`'s watermark."""
    sql: str = load("0023_money_days_fixes.py")._refresh(fixed=True)
    before = "user_view_name = 'telemetry_1h'"
    assert before in sql
    return sql.replace(before, f"user_view_name = '{watermark_of}'")


def _raw_storage(direction: str) -> list[str]:
    return [
        f"SELECT set_chunk_time_interval('telemetry', INTERVAL '{RAW_CHUNK[direction]}')",
        "SELECT remove_compression_policy('telemetry', if_exists => true)",
        "SELECT add_compression_policy('telemetry', compress_after => INTERVAL"
        f" '{RAW_COMPRESS_AFTER[direction]}', schedule_interval => INTERVAL '1 hour')",
    ]


def _exists(relation: str) -> bool:
    cursor = _cursor()
    cursor.execute("SELECT to_regclass(%s) IS NOT NULL", (relation,))
    row = cursor.fetchone()
    assert row is not None
    return bool(row[0])


def upgrade() -> None:
    added = [
        f"ALTER TABLE telemetry ADD COLUMN IF NOT EXISTS {stored} {pg_type}"
        for _, stored, pg_type, _ in RETYPED
    ]
    if _exists(FIXED["telemetry_5m"]):
        # Run again (earlier migrations run again set what they set): the rest stands.
        _run(added + _raw_storage("upgrade") + [_money_job(FIXED["telemetry_1h"])])
        return
    statements = _dependents() + added + _raw_storage("upgrade")
    statements.append(FIXED_5M)
    statements += _policies(FIXED["telemetry_5m"], "telemetry_5m")
    for name in AGGREGATES[1:]:
        statements.append(_fixed_rollup(name))
        statements += _policies(FIXED[name], name)
    _run(statements)
    _run([_copy(name, FIXED[name], NAMES, AS_FIXED) for name in AGGREGATES])
    _run([statement for name in AGGREGATES for statement in _carry_state(name, FIXED[name], name)])
    _run([f"DROP MATERIALIZED VIEW {name}" for name in reversed(AGGREGATES)])
    _run([*_views(aggregates_are_views=True), _money_job(FIXED["telemetry_1h"])])


def downgrade() -> None:
    energy_and_money = load("0013_energy_and_money.py")
    statements = _dependents()
    statements += [f"DROP VIEW IF EXISTS {name}" for name in AGGREGATES]
    # The rows written since the upgrade get their values back in the float columns (an
    # update of compressed chunks: slow on a large hub, docs/upgrade.md).
    statements.append(
        "UPDATE telemetry SET "
        + ", ".join(f"{sent} = {stored}::float8 / {scale}" for sent, stored, _, scale in RETYPED)
        + " WHERE solar_w IS NOT NULL"
    )
    statements += _raw_storage("downgrade")
    statements.append(energy_and_money.TELEMETRY_5M)
    statements += _policies("telemetry_5m", "telemetry_5m")
    statements.append(energy_and_money._rollup("telemetry_1h", "telemetry_5m", "1 hour"))
    statements += _policies("telemetry_1h", "telemetry_1h")
    statements.append(energy_and_money._rollup("telemetry_1d", "telemetry_1h", "1 day"))
    statements += _policies("telemetry_1d", "telemetry_1d")
    _run(statements)
    _run([_copy(FIXED[name], name, OLD_NAMES, AS_OLD) for name in AGGREGATES])
    _run([statement for name in AGGREGATES for statement in _carry_state(FIXED[name], name, name)])
    _run([f"DROP MATERIALIZED VIEW {FIXED[name]}" for name in reversed(AGGREGATES)])
    _run([f"ALTER TABLE telemetry DROP COLUMN {stored}" for _, stored, _, _ in RETYPED])
    _run([*_views(aggregates_are_views=False), _money_job("telemetry_1h")])
