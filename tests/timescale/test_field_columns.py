"""The migrated schema has exactly the columns the field table (contract/fields.py) says:
the migrations are frozen snapshots, so this is where the two are held together."""

from __future__ import annotations

import pytest
from annotated_types import Ge, Le

from contract.fields import DECISIONS, LEGACY_COLUMNS, PG_INTEGER_RANGES, TELEMETRY, Rollup

pytestmark = pytest.mark.integration

COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

AGGREGATES = ("telemetry_5m", "telemetry_1h", "telemetry_1d")

# The table's column types (as psycopg's binary COPY names them) as format_type() does.
TYPE_NAMES = {
    "timestamptz": "timestamp with time zone",
    "text": "text",
    "int4": "integer",
    "int8": "bigint",
    "float8": "double precision",
}


def _columns(database, relation: str) -> list[tuple[str, str]]:
    with database.connect() as conn:
        return [tuple(row) for row in conn.execute(COLUMNS, (relation,))]


def _aggregate_columns() -> list[tuple[str, str]]:
    """What the table says each continuous aggregate holds, sorted by name."""
    columns = []
    for field in TELEMETRY:
        for aggregate in field.aggregates:
            if aggregate.rollup is Rollup.KEY:
                type_name = TYPE_NAMES[field.pg_type]
            elif aggregate.rollup is Rollup.BUCKET:
                type_name = "timestamp with time zone"
            elif aggregate.rollup is Rollup.COUNT:
                type_name = "bigint"
            else:
                type_name = "double precision"
            columns.append((aggregate.column or field.column, type_name))
    return sorted(columns)


@pytest.mark.parametrize("schema", ["public", "tenant_view"])
def test_telemetry_has_the_tables_columns(database, schema):
    # The writer names its columns; fixed-point ones were added after the others.
    assert sorted(_columns(database, f"{schema}.telemetry")) == sorted(
        [(f.table_column, TYPE_NAMES[f.table_type]) for f in TELEMETRY]
        + [(legacy, "double precision") for legacy in LEGACY_COLUMNS]
    )


@pytest.mark.parametrize("field", [f for f in TELEMETRY if f.stored], ids=lambda f: f.column)
def test_a_fixed_point_fields_bounds_fit_its_integer_column(field):
    """A value the wire type lets through is stored without overflow."""
    assert field.stored is not None
    lowest, highest = PG_INTEGER_RANGES[field.stored.pg_type]
    constraints = [m for info in field.wire_type.__metadata__ for m in info.metadata]
    ge = next(c.ge for c in constraints if isinstance(c, Ge))
    le = next(c.le for c in constraints if isinstance(c, Le))
    assert lowest <= round(ge * field.stored.scale)
    assert round(le * field.stored.scale) <= highest


@pytest.mark.parametrize("schema", ["public", "tenant_view"])
def test_optimizer_decisions_has_the_tables_columns_in_order(database, schema):
    assert _columns(database, f"{schema}.optimizer_decisions") == [
        (f.column, TYPE_NAMES[f.pg_type]) for f in DECISIONS
    ]


@pytest.mark.parametrize("schema", ["public", "tenant_view"])
@pytest.mark.parametrize("aggregate", AGGREGATES)
def test_each_aggregate_has_exactly_the_tables_aggregate_columns(database, schema, aggregate):
    assert sorted(_columns(database, f"{schema}.{aggregate}")) == _aggregate_columns()
