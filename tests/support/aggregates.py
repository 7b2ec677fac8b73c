"""Materializing the continuous aggregates over a window, as their refresh policies do
but for any window (a test's days may lie where no policy reaches, or below a watermark
another test moved)."""

from __future__ import annotations

from datetime import datetime

from contract.fields import CONTINUOUS_AGGREGATES as AGGREGATES
from tests.support.services import Database
from timescale import earlier_migration

# Before migration 0026 the aggregates were these (now views over the ones above).
AGGREGATES_BEFORE_0026 = earlier_migration.AGGREGATES


def materialize(
    db: Database, start: datetime | None, end: datetime | None, views: tuple[str, ...] = AGGREGATES
) -> None:
    """Refreshes `views` over [start, end) (None: unbounded), outside a transaction as a
    refresh must run."""
    with db.connect() as conn:
        conn.autocommit = True
        for view in views:
            conn.execute("CALL refresh_continuous_aggregate(%s, %s, %s)", (view, start, end))
