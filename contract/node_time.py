"""A time a node states (its clock): when it read its inventory, when its lock was set,
when it acked a command, until when its tunnel stays open.

Any aware ISO 8601 time parses, but only one within years 2000-9998 (UTC) is taken: the
hub stores it in timestamptz columns and reads it back through Python, and PostgreSQL
keeps times Python cannot (`0001-01-01T00:00:00+14:00` is stored as 1 BC, after which
every read of that row fails). A node's clock is never plausibly outside these years."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)


def _within_years(value: datetime) -> datetime:
    try:
        utc = value.astimezone(UTC)
    except OverflowError:  # its offset carries it past year 1 or 9999
        utc = None
    if utc is None or not EARLIEST <= utc < LATEST:
        raise ValueError(
            f"{value.isoformat()} is outside {EARLIEST:%Y}-{LATEST.year - 1} (UTC):"
            " the node's clock is wrong"
        )
    return value


NodeTime = Annotated[AwareDatetime, AfterValidator(_within_years)]
