"""Time zones and tariffs: local days and prices the hub owns (contract/tariff.py).

- `tenants.timezone`: the IANA zone a tenant's sites are in unless a site says otherwise
  (`nodes.timezone`, NULL: the tenant's). Checked by the control API against the zones
  Python's zoneinfo knows, and here against PostgreSQL's own list.
- `tariffs`: versions of a tenant's tariff (`node_id` NULL) or of one site's own, each in
  force from local midnight of `valid_from` until the next version's. Beside the tariff
  as given (`tariff`, jsonb) are its price grids: one price (and import period name) per
  hour of the week, Monday 00:00 first, which the analytics index by local time.

Tenants that exist before this migration get the tariff the agents' defaults priced
samples with until now (0.55, 0.85 from 17:00 to 21:00, export paid at the import price)
in UTC, from 2000-01-01, so their figures do not change until an admin sets the real one.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30
"""

from alembic import op
from sqlalchemy import text

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# Hours of a week: a price grid's length (contract.tariff.HOURS_PER_WEEK, frozen here).
HOURS_PER_WEEK = 168

# The tariff the agents' defaults priced with, as contract.tariff.Tariff JSON; its grids
# are built in SQL below (hours 17 to 20 of every day at the peak price).
LEGACY_TARIFF = """{"currency": "PLN",
 "import_price": {"default_price": 0.55, "default_name": "off-peak", "periods":
   [{"name": "peak", "weekdays": [1, 2, 3, 4, 5, 6, 7], "from_hour": 17, "to_hour": 21,
     "price": 0.85}]},
 "export_price": {"default_price": 0.55, "default_name": "off-peak", "periods":
   [{"name": "peak", "weekdays": [1, 2, 3, 4, 5, 6, 7], "from_hour": 17, "to_hour": 21,
     "price": 0.85}]}}"""
PEAK = "(h % 24) BETWEEN 17 AND 20"

STATEMENTS = [
    # A zone PostgreSQL does not know would fail every query that converts to it.
    """
    CREATE OR REPLACE FUNCTION is_time_zone(name text) RETURNS boolean
    LANGUAGE sql STABLE AS $$
        SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE pg_timezone_names.name = $1)
    $$
    """,
    "ALTER TABLE tenants ADD COLUMN IF NOT EXISTS timezone text NOT NULL DEFAULT 'UTC'",
    "ALTER TABLE nodes ADD COLUMN IF NOT EXISTS timezone text",
    """
    CREATE OR REPLACE FUNCTION check_time_zone() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.timezone IS NOT NULL AND NOT is_time_zone(NEW.timezone) THEN
            RAISE EXCEPTION 'unknown time zone %', NEW.timezone USING ERRCODE = '22023';
        END IF;
        RETURN NEW;
    END
    $$
    """,
    "CREATE OR REPLACE TRIGGER tenants_time_zone BEFORE INSERT OR UPDATE OF timezone"
    " ON tenants FOR EACH ROW EXECUTE FUNCTION check_time_zone()",
    "CREATE OR REPLACE TRIGGER nodes_time_zone BEFORE INSERT OR UPDATE OF timezone"
    " ON nodes FOR EACH ROW EXECUTE FUNCTION check_time_zone()",
    f"""
    CREATE TABLE IF NOT EXISTS tariffs (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        tenant_id bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
        node_id text REFERENCES nodes (id) ON DELETE CASCADE,
        valid_from date NOT NULL,
        currency text NOT NULL CHECK (currency ~ '^[A-Z]{{3}}$'),
        tariff jsonb NOT NULL,
        import_prices double precision[] NOT NULL
            CHECK (cardinality(import_prices) = {HOURS_PER_WEEK}),
        export_prices double precision[] NOT NULL
            CHECK (cardinality(export_prices) = {HOURS_PER_WEEK}),
        import_periods text[] NOT NULL CHECK (cardinality(import_periods) = {HOURS_PER_WEEK}),
        created_by bigint REFERENCES users (id) ON DELETE SET NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        UNIQUE NULLS NOT DISTINCT (tenant_id, node_id, valid_from)
    )
    """,
    "CREATE INDEX IF NOT EXISTS tariffs_node_idx ON tariffs (node_id) WHERE node_id IS NOT NULL",
    f"""
    INSERT INTO tariffs (tenant_id, valid_from, currency, tariff, import_prices, export_prices,
        import_periods)
    SELECT t.id, DATE '2000-01-01', 'PLN', CAST(:legacy AS jsonb), g.prices, g.prices, g.names
    FROM tenants t, (
        SELECT array_agg(CASE WHEN {PEAK} THEN 0.85 ELSE 0.55 END ORDER BY h) AS prices,
            array_agg(CASE WHEN {PEAK} THEN 'peak' ELSE 'off-peak' END ORDER BY h) AS names
        FROM generate_series(0, {HOURS_PER_WEEK - 1}) h
    ) g
    ON CONFLICT DO NOTHING
    """,
]


def upgrade() -> None:
    bind = op.get_bind()
    # Only tenants that predate tariffs get the legacy one: run again, this migration
    # must not give it to tenants created since, which have none on purpose.
    first_run = bind.execute(text("SELECT to_regclass('tariffs') IS NULL")).scalar_one()
    for statement in STATEMENTS:
        if ":legacy" in statement:
            if first_run:
                bind.execute(text(statement), {"legacy": LEGACY_TARIFF})
        else:
            op.execute(statement)


def downgrade() -> None:
    for statement in [
        "DROP TABLE IF EXISTS tariffs",
        "DROP TRIGGER IF EXISTS nodes_time_zone ON nodes",
        "DROP TRIGGER IF EXISTS tenants_time_zone ON tenants",
        "DROP FUNCTION IF EXISTS check_time_zone()",
        "ALTER TABLE nodes DROP COLUMN IF EXISTS timezone",
        "ALTER TABLE tenants DROP COLUMN IF EXISTS timezone",
        "DROP FUNCTION IF EXISTS is_time_zone(text)",
    ]:
        op.execute(statement)
