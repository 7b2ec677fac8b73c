"""The storage benchmark (tests/benchmarks/storage.py) at a tiny scale, so it cannot rot:
it fills realistic 5-second samples, compresses them, measures every candidate and
aggregate, and computes the steady state, over data (not a size)."""

from __future__ import annotations

import argparse

import pytest

from tests.benchmarks.dashboards import RefusedDatabaseError
from tests.benchmarks.storage import AGGREGATES, CANDIDATES, FLOATS, INTEGERS_1D, run
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
    # (compress 2 hours after a chunk's end) compressed them.
    assert plain.rows + compressed.rows == pytest.approx(2 * 17280, rel=0.003)
    assert compressed.rows > 0
    assert compressed.after < compressed.before
    assert list(results["candidates"]) == [c.name for c in CANDIDATES]
    for m in results["candidates"].values():
        assert m.rows == pytest.approx(17280, rel=0.003)
        assert 0 < m.after < m.before
        assert m.pages["a site day"] > 0
    # Full-mantissa floats are what compression cannot shrink; their integers it can.
    measured = results["candidates"]
    floats, integers = measured[FLOATS.name], measured[INTEGERS_1D.name]
    assert sum(integers.columns.values()) < sum(floats.columns.values()) / 2
    assert integers.after < floats.after
    assert list(results["aggregates"]) == [view for view, _ in AGGREGATES]
    for view, m in results["aggregates"].items():
        assert 0 < m.after < m.before
        assert m.after < results["aggregates as doubles"][view].after
    # Compressing after a day instead of a week, then integers in 6-hour chunks.
    assert 0 < results["now"] < results["0020"] < results["before"]
    assert again["now"] == pytest.approx(results["now"], rel=0.05)
