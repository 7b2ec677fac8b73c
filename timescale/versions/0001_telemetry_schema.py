"""Telemetry schema: relational tables, hypertables, continuous aggregates, policies,
tenant views.

Energy in the aggregates: each 5-minute bucket's energy is its mean power times five
minutes (W / 12000 = kWh), so a bucket with samples stands for the whole bucket; a bucket
with none stands for nothing. Money uses the grid price of each sample:
- cost: net grid energy x price (export credited at the same price),
- grid_only_cost: load energy x price (what the site would pay with no PV or battery),
- savings: grid_only_cost - cost.
Days are UTC days.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from alembic import op

from timescale.earlier_migration import on_aggregates

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# W averaged over a 5-minute bucket -> kWh: W * (5/60) h / 1000.
W_TO_KWH_5M = "12000.0"

RELATIONAL = [
    "CREATE EXTENSION IF NOT EXISTS timescaledb",
    """
    CREATE TABLE IF NOT EXISTS tenants (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        slug text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
        name text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS nodes (
        id text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
        tenant_id bigint NOT NULL REFERENCES tenants (id),
        display_name text NOT NULL DEFAULT '',
        enabled boolean NOT NULL DEFAULT true,
        created_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    "CREATE INDEX IF NOT EXISTS nodes_tenant_idx ON nodes (tenant_id)",
    """
    CREATE TABLE IF NOT EXISTS node_status (
        node_id text PRIMARY KEY REFERENCES nodes (id) ON DELETE CASCADE,
        state text NOT NULL DEFAULT 'unknown',
        last_seen_at timestamptz,
        last_seq bigint,
        clock_drift_s double precision,
        agent_version text,
        last_decision text,
        updated_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    # Maps a tenant's Grafana database role to its tenant; read by the tenant views.
    """
    CREATE TABLE IF NOT EXISTS tenant_roles (
        role_name name PRIMARY KEY,
        tenant_id bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE
    )
    """,
]

HYPERTABLES = [
    """
    CREATE TABLE IF NOT EXISTS telemetry (
        ts timestamptz NOT NULL,
        node_id text NOT NULL,
        tenant_id bigint NOT NULL,
        seq bigint NOT NULL,
        soc_percent double precision,
        battery_voltage double precision,
        battery_power_w double precision,
        solar_power_w double precision,
        grid_power_w double precision,
        load_power_w double precision,
        grid_price double precision,
        grid_mode text,
        received_at timestamptz NOT NULL DEFAULT now(),
        UNIQUE (node_id, ts)
    )
    """,
    # No default (ts) index: the unique (node_id, ts) index and the tenant index serve
    # every query, chunk exclusion serves time ranges, and each index costs ingest.
    "SELECT create_hypertable('telemetry', by_range('ts', INTERVAL '1 day'),"
    " create_default_indexes => false, if_not_exists => true)",
    "CREATE INDEX IF NOT EXISTS telemetry_tenant_ts_idx ON telemetry (tenant_id, ts DESC)",
    """
    CREATE TABLE IF NOT EXISTS optimizer_decisions (
        ts timestamptz NOT NULL,
        node_id text NOT NULL,
        tenant_id bigint NOT NULL,
        decision text NOT NULL,
        grid_mode text,
        daily_savings double precision,
        daily_cost double precision,
        UNIQUE (node_id, ts)
    )
    """,
    "SELECT create_hypertable('optimizer_decisions', by_range('ts', INTERVAL '7 days'),"
    " if_not_exists => true)",
    """
    CREATE TABLE IF NOT EXISTS node_events (
        ts timestamptz NOT NULL,
        node_id text NOT NULL,
        tenant_id bigint NOT NULL,
        state text NOT NULL,
        source text NOT NULL,
        detail jsonb NOT NULL DEFAULT '{}',
        UNIQUE (node_id, ts, state)
    )
    """,
    "SELECT create_hypertable('node_events', by_range('ts', INTERVAL '7 days'),"
    " if_not_exists => true)",
    """
    CREATE TABLE IF NOT EXISTS dead_letters (
        received_at timestamptz NOT NULL,
        topic text NOT NULL,
        node_id text,
        reason text NOT NULL,
        detail text NOT NULL,
        payload bytea NOT NULL
    )
    """,
    "SELECT create_hypertable('dead_letters', by_range('received_at', INTERVAL '1 day'),"
    " if_not_exists => true)",
    "CREATE INDEX IF NOT EXISTS dead_letters_reason_idx ON dead_letters (reason, received_at DESC)",
]


def _energy_columns(divisor: str) -> str:
    # (x + |x|) / 2 is max(x, 0) but keeps NULL a NULL (greatest() would turn it into 0).
    return f"""
        avg(solar_power_w) / {divisor} AS pv_kwh,
        avg((grid_power_w + abs(grid_power_w)) / 2) / {divisor} AS grid_import_kwh,
        avg((abs(grid_power_w) - grid_power_w) / 2) / {divisor} AS grid_export_kwh,
        avg(load_power_w) / {divisor} AS load_kwh,
        avg((abs(battery_power_w) - battery_power_w) / 2) / {divisor} AS battery_in_kwh,
        avg((battery_power_w + abs(battery_power_w)) / 2) / {divisor} AS battery_out_kwh,
        avg(grid_power_w * grid_price) / {divisor} AS cost,
        avg(load_power_w * grid_price) / {divisor} AS grid_only_cost,
        (avg(load_power_w * grid_price) - avg(grid_power_w * grid_price)) / {divisor} AS savings
    """


def _rollup(source: str, width: str) -> str:
    """A coarser aggregate over a finer one: energies and money add up, means average."""
    return f"""
    SELECT time_bucket(INTERVAL '{width}', bucket) AS bucket, node_id, tenant_id,
        sum(sample_count)::bigint AS sample_count,
        avg(soc_avg) AS soc_avg, min(soc_min) AS soc_min, max(soc_max) AS soc_max,
        avg(solar_power_w) AS solar_power_w, avg(battery_power_w) AS battery_power_w,
        avg(grid_power_w) AS grid_power_w, avg(load_power_w) AS load_power_w,
        avg(grid_price) AS grid_price,
        sum(pv_kwh) AS pv_kwh, sum(grid_import_kwh) AS grid_import_kwh,
        sum(grid_export_kwh) AS grid_export_kwh, sum(load_kwh) AS load_kwh,
        sum(battery_in_kwh) AS battery_in_kwh, sum(battery_out_kwh) AS battery_out_kwh,
        sum(cost) AS cost, sum(grid_only_cost) AS grid_only_cost, sum(savings) AS savings
    FROM {source}
    GROUP BY 1, node_id, tenant_id
    """


CAGG_OPTIONS = "timescaledb.continuous, timescaledb.materialized_only = false"

AGGREGATES = [
    f"""
    CREATE MATERIALIZED VIEW IF NOT EXISTS telemetry_5m WITH ({CAGG_OPTIONS}) AS
    SELECT time_bucket(INTERVAL '5 minutes', ts) AS bucket, node_id, tenant_id,
        count(*) AS sample_count,
        avg(soc_percent) AS soc_avg, min(soc_percent) AS soc_min, max(soc_percent) AS soc_max,
        avg(solar_power_w) AS solar_power_w, avg(battery_power_w) AS battery_power_w,
        avg(grid_power_w) AS grid_power_w, avg(load_power_w) AS load_power_w,
        avg(grid_price) AS grid_price,
        {_energy_columns(W_TO_KWH_5M)}
    FROM telemetry
    GROUP BY 1, node_id, tenant_id
    WITH NO DATA
    """,
    f"CREATE MATERIALIZED VIEW IF NOT EXISTS telemetry_1h WITH ({CAGG_OPTIONS}) AS"
    f" {_rollup('telemetry_5m', '1 hour')} WITH NO DATA",
    f"CREATE MATERIALIZED VIEW IF NOT EXISTS telemetry_1d WITH ({CAGG_OPTIONS}) AS"
    f" {_rollup('telemetry_1h', '1 day')} WITH NO DATA",
]

# Refresh windows reach back past the edge buffer's 7 days, so a site that replays a
# week-old backlog corrects its aggregates.
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
    "ALTER TABLE telemetry SET (timescaledb.compress, timescaledb.compress_segmentby = 'node_id',"
    " timescaledb.compress_orderby = 'ts DESC')",
    "SELECT add_compression_policy('telemetry', INTERVAL '7 days', if_not_exists => true)",
    "SELECT add_retention_policy('telemetry', INTERVAL '30 days', if_not_exists => true)",
    "SELECT add_retention_policy('telemetry_5m', INTERVAL '400 days', if_not_exists => true)",
    "SELECT add_retention_policy('dead_letters', INTERVAL '14 days', if_not_exists => true)",
]

# What a tenant's role may read, each filtered to the tenant its role maps to. The
# subquery runs with the view owner's rights, so tenant roles need no access to
# tenant_roles or any base table; current_user is still the querying tenant role.
TENANT_SCOPED = (
    "nodes",
    "telemetry",
    "telemetry_5m",
    "telemetry_1h",
    "telemetry_1d",
    "optimizer_decisions",
    "node_events",
)
TENANT_FILTER = (
    "(SELECT tr.tenant_id FROM public.tenant_roles tr WHERE tr.role_name = current_user)"
)


def _tenant_views() -> list[str]:
    statements = [
        "CREATE SCHEMA IF NOT EXISTS tenant_view",
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'wattfleet_tenant')"
        " THEN CREATE ROLE wattfleet_tenant NOLOGIN; END IF; END $$",
    ]
    for name in TENANT_SCOPED:
        statements.append(
            f"CREATE OR REPLACE VIEW tenant_view.{name} WITH (security_barrier) AS"
            f" SELECT * FROM public.{name} WHERE tenant_id = {TENANT_FILTER}"
        )
    statements += [
        "CREATE OR REPLACE VIEW tenant_view.node_status WITH (security_barrier) AS"
        " SELECT s.* FROM public.node_status s JOIN public.nodes n ON n.id = s.node_id"
        f" WHERE n.tenant_id = {TENANT_FILTER}",
        "GRANT USAGE ON SCHEMA tenant_view TO wattfleet_tenant",
        "GRANT SELECT ON ALL TABLES IN SCHEMA tenant_view TO wattfleet_tenant",
        # Creates (or updates) a tenant's login role: member of wattfleet_tenant, mapped
        # to exactly one tenant. Refuses to re-map a role that belongs to another tenant.
        """
        CREATE OR REPLACE FUNCTION tenant_view.ensure_tenant_role(
            p_tenant_id bigint, p_role text, p_password text DEFAULT NULL)
        RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
        AS $fn$
        DECLARE mapped bigint;
        BEGIN
            SELECT tenant_id INTO mapped FROM public.tenant_roles WHERE role_name = p_role;
            IF mapped IS NOT NULL AND mapped <> p_tenant_id THEN
                RAISE EXCEPTION 'role % already belongs to tenant %', p_role, mapped;
            END IF;
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = p_role) THEN
                EXECUTE format('CREATE ROLE %I LOGIN', p_role);
            END IF;
            IF p_password IS NOT NULL THEN
                EXECUTE format('ALTER ROLE %I PASSWORD %L', p_role, p_password);
            END IF;
            -- INHERIT before the GRANT: from PostgreSQL 16 a membership inherits only
            -- if the member role did when it was granted.
            EXECUTE format('ALTER ROLE %I INHERIT', p_role);
            EXECUTE format('GRANT wattfleet_tenant TO %I', p_role);
            INSERT INTO public.tenant_roles (role_name, tenant_id) VALUES (p_role, p_tenant_id)
                ON CONFLICT (role_name) DO NOTHING;
        END
        $fn$
        """,
        "REVOKE ALL ON FUNCTION tenant_view.ensure_tenant_role(bigint, text, text) FROM PUBLIC",
    ]
    return statements


def _run(statements: list[str]) -> None:
    # Straight to the DBAPI cursor: neither SQLAlchemy (':name') nor psycopg ('%s')
    # placeholder parsing may touch the raw SQL.
    cursor = op.get_bind().connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    for statement in statements:
        cursor.execute(statement)


def _missing_aggregates() -> list[str]:
    # Run again over a later schema, these must not be re-analyzed: migration 0013 gave
    # the aggregates another shape, which this SQL's rollups do not fit.
    cursor = op.get_bind().connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    cursor.execute("SELECT to_regclass('telemetry_5m') IS NULL")
    row = cursor.fetchone()
    assert row is not None
    return AGGREGATES if row[0] else []


def upgrade() -> None:
    _run(RELATIONAL + HYPERTABLES)
    _run(_missing_aggregates() + on_aggregates(POLICIES) + _tenant_views())


def downgrade() -> None:
    _run(
        [
            "DROP SCHEMA IF EXISTS tenant_view CASCADE",
            "DROP MATERIALIZED VIEW IF EXISTS telemetry_1d",
            "DROP MATERIALIZED VIEW IF EXISTS telemetry_1h",
            "DROP MATERIALIZED VIEW IF EXISTS telemetry_5m",
            "DROP TABLE IF EXISTS dead_letters",
            "DROP TABLE IF EXISTS node_events",
            "DROP TABLE IF EXISTS optimizer_decisions",
            "DROP TABLE IF EXISTS telemetry",
            "DROP TABLE IF EXISTS tenant_roles",
            "DROP TABLE IF EXISTS node_status",
            "DROP TABLE IF EXISTS nodes",
            "DROP TABLE IF EXISTS tenants",
        ]
    )
