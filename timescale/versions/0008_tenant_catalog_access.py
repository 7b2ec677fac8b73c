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


def _functions(give: str) -> str:
    """Every overload of the functions that measure: TimescaleDB's, and PostgreSQL's
    sizes, WAL position and statistics."""
    return f"""
    DO $$ DECLARE f regprocedure; BEGIN
        FOR f IN
            SELECT p.oid::regprocedure FROM pg_proc p
            WHERE ((p.pronamespace = (SELECT extnamespace FROM pg_extension
                                      WHERE extname = 'timescaledb')
                    OR p.pronamespace::regnamespace::text
                       = ANY ({_names(TIMESCALE_FUNCTION_SCHEMAS)}))
                   AND p.proname LIKE ANY ({_names(TIMESCALE_FIGURES)}))
               OR (p.pronamespace = 'pg_catalog'::regnamespace
                   AND (p.proname = ANY ({_names(POSTGRES_FIGURES)})
                        OR p.proname LIKE 'pg\\_stat\\_get\\_%'))
        LOOP
            {give}
        END LOOP;
    END $$
    """


def _schemas(give: str) -> str:
    return f"""
    DO $$ DECLARE s text; BEGIN
        FOR s IN SELECT nspname FROM pg_namespace
                 WHERE nspname = ANY ({_names(TIMESCALE_SCHEMAS)})
        LOOP
            {give}
        END LOOP;
    END $$
    """


def _statistics_views(give: str) -> str:
    return f"""
    DO $$ DECLARE v text; BEGIN
        FOR v IN SELECT c.oid::regclass::text FROM pg_class c
                 WHERE c.relnamespace = 'pg_catalog'::regnamespace AND c.relkind = 'v'
                   AND (c.relname LIKE 'pg\\_stat%' OR c.relname LIKE 'pg\\_statio\\_%')
        LOOP
            {give}
        END LOOP;
    END $$
    """


def _class_columns(give: str) -> str:
    """pg_class's columns but the estimates, as `%s` of the grant or revoke."""
    return f"""
    DO $$ DECLARE cols text; BEGIN
        SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO cols
        FROM pg_attribute
        WHERE attrelid = 'pg_catalog.pg_class'::regclass AND attnum > 0 AND NOT attisdropped
          AND attname <> ALL ({_names(ESTIMATES)});
        EXECUTE format('{give}', cols);
    END $$
    """


def upgrade() -> None:
    op.execute(
        _functions(
            "EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);"
            f" EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO {MONITOR}', f);"
        )
    )
    op.execute(
        _schemas(
            "EXECUTE format('REVOKE USAGE ON SCHEMA %I FROM PUBLIC', s);"
            f" EXECUTE format('GRANT USAGE ON SCHEMA %I TO {MONITOR}', s);"
        )
    )
    op.execute(
        _statistics_views(
            "EXECUTE format('REVOKE SELECT ON %s FROM PUBLIC', v);"
            f" EXECUTE format('GRANT SELECT ON %s TO {MONITOR}', v);"
        )
    )
    # Column privileges only narrow a table-wide grant once that grant is gone.
    op.execute("REVOKE SELECT ON pg_catalog.pg_class FROM PUBLIC")
    op.execute(_class_columns("GRANT SELECT (%s) ON pg_catalog.pg_class TO PUBLIC"))
    op.execute(f"GRANT SELECT ON pg_catalog.pg_class TO {MONITOR}")


def downgrade() -> None:
    op.execute(f"REVOKE SELECT ON pg_catalog.pg_class FROM {MONITOR}")
    op.execute(_class_columns("REVOKE SELECT (%s) ON pg_catalog.pg_class FROM PUBLIC"))
    op.execute("GRANT SELECT ON pg_catalog.pg_class TO PUBLIC")
    op.execute(
        _statistics_views(
            f"EXECUTE format('REVOKE SELECT ON %s FROM {MONITOR}', v);"
            " EXECUTE format('GRANT SELECT ON %s TO PUBLIC', v);"
        )
    )
    op.execute(
        _schemas(
            f"EXECUTE format('REVOKE USAGE ON SCHEMA %I FROM {MONITOR}', s);"
            " EXECUTE format('GRANT USAGE ON SCHEMA %I TO PUBLIC', s);"
        )
    )
    op.execute(
        _functions(
            f"EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM {MONITOR}', f);"
            " EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO PUBLIC', f);"
        )
    )
