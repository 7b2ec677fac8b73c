"""What migrations share about the ones before them: an earlier migration's module, for a
later one that rebuilds what it made with its own frozen SQL (the versions are files
named by revision, not importable package modules); and which of an earlier one's
statements still apply when it runs again over a later schema."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

VERSIONS = Path(__file__).with_name("versions")


def load(filename: str) -> ModuleType:
    """`timescale/versions/<filename>`, loaded as a module of its own."""
    path = VERSIONS / filename
    spec = importlib.util.spec_from_file_location(f"wattfleet_migration_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Migration 0026 made these plain views over `<name>_fixed` aggregates.
AGGREGATES = ("telemetry_5m", "telemetry_1h", "telemetry_1d")


def on_aggregates(statements: list[str]) -> list[str]:
    """`statements` without those that set up one of the aggregates (a policy, chunks,
    compression) once it is a plain view: run again over a later schema, an earlier
    migration leaves that to the later one."""
    cursor = op.get_bind().connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    cursor.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relname = ANY (%s) AND NOT EXISTS ("
        "SELECT FROM _timescaledb_catalog.continuous_agg a"
        " WHERE a.user_view_schema = 'public' AND a.user_view_name = c.relname)",
        (list(AGGREGATES),),
    )
    views = [name for (name,) in cursor.fetchall()]
    return [
        s for s in statements if not any(f"'{name}'" in s or f"VIEW {name} " in s for name in views)
    ]
