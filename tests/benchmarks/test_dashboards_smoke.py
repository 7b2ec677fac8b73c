"""The dashboard benchmark (tests/benchmarks/dashboards.py) at a tiny scale, so it cannot
rot: it fills a fleet, materializes it and gets a timing for every SQL query of every
dashboard as each role that reads it, over data (not a time)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.benchmarks.dashboards import (
    ANY_RANGE,
    RANGES,
    RefusedDatabaseError,
    dashboards,
    markdown,
    materialize,
    prepare_fleet,
    queries,
    sql_queries,
    time_queries,
)
from tests.benchmarks.synthetic_fleet import Scale
from tests.support.services import empty_database

pytestmark = pytest.mark.integration


def test_every_dashboard_query_is_timed_over_the_fleet():
    scale = Scale(tenants=2, sites=3, days=2)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    now -= timedelta(minutes=now.minute % 5)
    with empty_database("bench") as db:
        fleet, start, end = prepare_fleet(db, scale, now, reuse=False, say=lambda _: None)
        materialize(db, start, end, timedelta(days=1), say=lambda _: None)
        tenant = fleet.tenants[0]
        timings = time_queries(
            db, tenant, queries(fleet, tenant, now, list(RANGES), 1000), runs=1, warmups=0
        )
        with pytest.raises(RefusedDatabaseError):
            prepare_fleet(db, scale, now, reuse=False, say=lambda _: None)
        _, topped_from, _ = prepare_fleet(
            db, scale, now + timedelta(minutes=10), reuse=True, say=lambda _: None
        )
        assert topped_from == now + scale.step

    expected = {
        (uid, title, role)
        for audience, uid, dashboard in dashboards()
        for title, _, _ in sql_queries(dashboard)
        for role in (("tenant", "admin") if audience == "tenant" else ("admin",))
    }
    assert {"wattfleet-fleet", "wattfleet-site", "wattfleet-savings", "wattfleet-sites"} <= {
        uid for uid, _, _ in expected
    }
    by_query: dict[tuple[str, str, str], set[str]] = {}
    for t in timings:
        assert len(t.ms) == 1
        by_query.setdefault((t.query.dashboard, t.query.panel, t.query.role), set()).add(
            t.query.range
        )
    assert set(by_query) == expected
    assert all(r in ({ANY_RANGE}, set(RANGES)) for r in by_query.values()), by_query

    rows = {
        (t.query.dashboard, t.query.panel, t.query.range, t.query.role): t.rows for t in timings
    }
    assert fleet.tenants[0].nodes == ["bench-t00-s00000", "bench-t00-s00002"]
    # The fleet is there for each role: its sites, money in each tenant's currency, series.
    assert rows["wattfleet-savings", "variable node", ANY_RANGE, "tenant"] == 2
    assert rows["wattfleet-sites", "Sites", ANY_RANGE, "admin"] == 3
    assert rows["wattfleet-savings", "Savings", "7d", "tenant"] == 1
    assert rows["wattfleet-savings", "Savings", "7d", "admin"] == 2  # PLN and EUR
    assert rows["wattfleet-savings", "Energy per day", "7d", "tenant"] >= 2
    assert rows["wattfleet-site", "Power", "24h", "tenant"] >= 24 * 12 - 1
    assert rows["wattfleet-site", "Optimizer decisions", "7d", "tenant"] >= 2
    table = markdown(timings).splitlines()
    assert len(table) == 2 + len({(t.query.dashboard, t.query.panel) for t in timings})
