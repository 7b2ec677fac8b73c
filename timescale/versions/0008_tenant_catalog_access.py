"""Tenant roles read their own rows, and no figure about the whole fleet.

A tenant's database role (its Grafana datasource) reads its tenant's rows through
`tenant_view`. What PostgreSQL and TimescaleDB grant every role by default would also
tell it how much the fleet has stored and how fast it grows: `hypertable_size()` and
TimescaleDB's other size, statistics, row-count and chunk functions (public ones and
their internal twins), `timescaledb_information.*` (chunks, jobs and their runs) and
TimescaleDB's catalog and config schemas, `pg_class.reltuples`/`relpages`, the
statistics views (`pg_stat_*`, `pg_statio_*`) and the `pg_stat_get_*` functions under
them, `pg_*_size()` and the WAL position. All of that is taken from PUBLIC here and
given to `pg_read_all_stats` (PostgreSQL's role for monitoring, so a monitoring login
keeps its figures). Superusers and the objects' owners, which the hub's services and
TimescaleDB's jobs run as, are not affected.

What every role still reads is structure, never quantities: the schema (open source:
names, types, definitions), including which chunks exist and the time range each one's
constraint covers. TimescaleDB's internal function schemas keep their USAGE: reading a
continuous aggregate needs them.

Valid on PostgreSQL 15-17 with TimescaleDB 2.22+: functions and catalog columns are
looked up by name, and what a version lacks is skipped.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

MONITOR = "pg_read_all_stats"
# TimescaleDB's functions whose names say they measure (LIKE patterns), in its
# extension's schema and its internal ones: every size, statistics and row-count
# function of 2.22-2.23, and those a later release names the same way.
TIMESCALE_FUNCTION_SCHEMAS = ("_timescaledb_functions", "_timescaledb_internal")
TIMESCALE_FIGURES = (
    "%size%",
    "%stats%",
    "%row\\_count%",
    "show\\_chunk%",
    "show\\_tablespaces",
    "get\\_%invalidations",
    "get\\_raw\\_materialization\\_ranges",
)
# Views and tables only: no reader needs them.
TIMESCALE_SCHEMAS = (
    "timescaledb_information",
    "timescaledb_experimental",
    "_timescaledb_catalog",
    "_timescaledb_config",
    "_timescaledb_cache",
    "_timescaledb_debug",
)
POSTGRES_FIGURES = (
    "pg_total_relation_size",
    "pg_relation_size",
    "pg_table_size",
    "pg_indexes_size",
    "pg_database_size",
    "pg_tablespace_size",
    "pg_current_wal_lsn",
    "pg_current_wal_insert_lsn",
    "pg_current_wal_flush_lsn",
)
# pg_class columns that estimate how many rows and pages a relation has.
ESTIMATES = ("reltuples", "relpages", "relallvisible", "relallfrozen")


def _names(values: tuple[str, ...]) -> str:
    return "ARRAY[" + ", ".join(f"'{v}'" for v in values) + "]"


# Every overload of the functions that measure: TimescaleDB's, and PostgreSQL's sizes,
# WAL position and statistics.
FUNCTIONS = f"""
    SELECT p.oid::regprocedure::text FROM pg_proc p
    WHERE ((p.pronamespace = (SELECT extnamespace FROM pg_extension
                              WHERE extname = 'timescaledb')
            OR p.pronamespace::regnamespace::text = ANY ({_names(TIMESCALE_FUNCTION_SCHEMAS)}))
           AND p.proname LIKE ANY ({_names(TIMESCALE_FIGURES)}))
       OR (p.pronamespace = 'pg_catalog'::regnamespace
           AND (p.proname = ANY ({_names(POSTGRES_FIGURES)})
                OR p.proname LIKE 'pg\\_stat\\_get\\_%'))
"""
SCHEMAS = f"""
    SELECT quote_ident(nspname) FROM pg_namespace
    WHERE nspname = ANY ({_names(TIMESCALE_SCHEMAS)})
"""
STATISTICS_VIEWS = """
    SELECT c.oid::regclass::text FROM pg_class c
    WHERE c.relnamespace = 'pg_catalog'::regnamespace AND c.relkind = 'v'
      AND (c.relname LIKE 'pg\\_stat%' OR c.relname LIKE 'pg\\_statio\\_%')
"""
# (what, the privilege on it)
MEASURES = (
    (FUNCTIONS, "EXECUTE ON FUNCTION"),
    (SCHEMAS, "USAGE ON SCHEMA"),
    (STATISTICS_VIEWS, "SELECT ON"),
)
# pg_class's columns but the estimates.
CLASS_COLUMNS = f"""
    SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute
    WHERE attrelid = 'pg_catalog.pg_class'::regclass AND attnum > 0 AND NOT attisdropped
      AND attname <> ALL ({_names(ESTIMATES)})
"""


def _for_each(query: str, statement: str) -> None:
    """Runs `statement` (a format() string) with `%s` as each name the query returns."""
    op.execute(
        f"""
        DO $$ DECLARE name text; BEGIN
            FOR name IN {query} LOOP
                EXECUTE format('{statement}', name);
            END LOOP;
        END $$
        """
    )


def _move_measures(from_role: str, to_role: str) -> None:
    for query, privilege in MEASURES:
        _for_each(query, f"REVOKE {privilege} %s FROM {from_role}")
        _for_each(query, f"GRANT {privilege} %s TO {to_role}")


def upgrade() -> None:
    _move_measures("PUBLIC", MONITOR)
    # Column privileges only narrow a table-wide grant once that grant is gone.
    op.execute("REVOKE SELECT ON pg_catalog.pg_class FROM PUBLIC")
    _for_each(CLASS_COLUMNS, "GRANT SELECT (%s) ON pg_catalog.pg_class TO PUBLIC")
    op.execute(f"GRANT SELECT ON pg_catalog.pg_class TO {MONITOR}")


def downgrade() -> None:
    op.execute(f"REVOKE SELECT ON pg_catalog.pg_class FROM {MONITOR}")
    _for_each(CLASS_COLUMNS, "REVOKE SELECT (%s) ON pg_catalog.pg_class FROM PUBLIC")
    op.execute("GRANT SELECT ON pg_catalog.pg_class TO PUBLIC")
    _move_measures(MONITOR, "PUBLIC")
