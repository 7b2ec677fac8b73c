"""The migrated schema has exactly the columns the field table (contract/fields.py) says:
the migrations are frozen snapshots, so this is where the two are held together."""

from __future__ import annotations

import pytest

from contract.fields import DECISIONS, PG_TYPE_NAMES, TELEMETRY, aggregate_columns

pytestmark = pytest.mark.integration

COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

AGGREGATES = ("telemetry_5m", "telemetry_1h", "telemetry_1d")


def _columns(database, relation: str) -> list[tuple[str, str]]:
    with database.connect() as conn:
        return [tuple(row) for row in conn.execute(COLUMNS, (relation,))]


@pytest.mark.parametrize("schema", ["public", "tenant_view"])
def test_telemetry_has_the_tables_columns_in_order(database, schema):
    assert _columns(database, f"{schema}.telemetry") == [
        (f.column, PG_TYPE_NAMES[f.pg_type]) for f in TELEMETRY
    ]


@pytest.mark.parametrize("schema", ["public", "tenant_view"])
def test_optimizer_decisions_has_the_tables_columns_in_order(database, schema):
    assert _columns(database, f"{schema}.optimizer_decisions") == [
        (f.column, PG_TYPE_NAMES[f.pg_type]) for f in DECISIONS
    ]


@pytest.mark.parametrize("schema", ["public", "tenant_view"])
@pytest.mark.parametrize("aggregate", AGGREGATES)
def test_each_aggregate_has_exactly_the_tables_aggregate_columns(database, schema, aggregate):
    columns = _columns(database, f"{schema}.{aggregate}")
    assert len(columns) == len(dict(columns))
    assert dict(columns) == aggregate_columns()
