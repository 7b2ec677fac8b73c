"""The storage benchmark (tests/benchmarks/storage.py) at a tiny scale, so it cannot rot:
it fills realistic 5-second samples, compresses them, measures every candidate and
aggregate, and computes the steady state, over data (not a size)."""

from __future__ import annotations

import argparse

import pytest

from tests.benchmarks.dashboards import RefusedDatabaseError
from tests.benchmarks.storage import AGGREGATES, CANDIDATES, run
from tests.support.services import empty_database

pytestmark = pytest.mark.integration


def test_every_setting_is_measured_on_compressed_samples():
    args = argparse.Namespace(sites=1, days=2, sample_days=1, reuse=False)
    with empty_database("bench") as db:
        results = run(db, args, say=lambda _: None)
        with pytest.raises(RefusedDatabaseError):
            run(db, args, say=lambda _: None)
        again = run(db, argparse.Namespace(**{**vars(args), "reuse": True}), say=lambda _: None)

    plain, compressed = results["table"]
    # Two full days of one site at 5 s, less a missed poll in a thousand: the policy
    # (compress after a day) compressed the older one.
    assert plain.rows + compressed.rows == pytest.approx(2 * 17280, rel=0.003)
    assert compressed.rows > 0
    assert compressed.after < compressed.before
    assert list(results["candidates"]) == [c.name for c in CANDIDATES]
    for m in results["candidates"].values():
        assert m.rows == pytest.approx(17280, rel=0.003)
        assert 0 < m.after < m.before
        assert m.pages["a site day"] > 0
    assert list(results["aggregates"]) == [view for view, _ in AGGREGATES]
    assert all(0 < m.after < m.before for m in results["aggregates"].values())
    # Compressing after a day instead of a week is the larger part of the saving.
    assert 0 < results["now"] < results["before"]
    assert 0 < results["typed"] < results["now"]
    assert 0 < results["energy typed"] < results["now"]
    assert results["integers"] > 0
    # Means and sums with full mantissas are what the aggregates' compression cannot shrink.
    for view, m in results["aggregates"].items():
        assert 0 < results["aggregates stored as"]["integers"][view].after < m.after
    assert again["now"] == pytest.approx(results["now"], rel=0.05)
