from __future__ import annotations

from datetime import UTC, datetime, timedelta

from edge.buffer import SampleBuffer

NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)


def _seqs(rows: list[tuple[int, str]]) -> list[int]:
    return [seq for seq, _ in rows]


def test_seq_is_monotonic_across_restarts_and_only_deleted_samples_go(tmp_path):
    path = tmp_path / "buffer.sqlite3"
    buffer = SampleBuffer(path, max_rows=100, max_age=timedelta(days=7))
    seqs = [buffer.append({"n": i}, NOW)[0] for i in range(5)]
    assert seqs == [0, 1, 2, 3, 4]
    assert buffer.delete_ranges([(0, 1)]) == 2
    buffer.close()

    reopened = SampleBuffer(path, max_rows=100, max_age=timedelta(days=7))
    assert reopened.append({"n": 5}, NOW) == (5, '{"n":5,"seq":5}')
    rows, after = reopened.pending(10)
    assert (_seqs(rows), after) == ([2, 3, 4, 5], 6)
    # From a seq on, skipping what is in flight; continuing after the last one looked at.
    rows, after = reopened.pending(2, 3, skip={3})
    assert (_seqs(rows), after) == ([4, 5], 6)
    rows, after = reopened.pending(1)
    assert (rows, after) == ([(2, '{"n":2,"seq":2}')], 3)


def test_ranges_are_deleted_and_unknown_seqs_are_no_op(tmp_path):
    buffer = SampleBuffer(tmp_path / "b.sqlite3", max_rows=100, max_age=timedelta(days=7))
    for i in range(10):
        buffer.append({"n": i}, NOW + timedelta(seconds=i))
    assert buffer.oldest_ts() == NOW
    assert buffer.delete_ranges([(0, 2), (5, 5), (8, 100), (500, 600)]) == 6
    assert _seqs(buffer.pending(100)[0]) == [3, 4, 6, 7]
    assert buffer.oldest_ts() == NOW + timedelta(seconds=3)
    assert buffer.delete_ranges([(0, 7)]) == 4
    assert buffer.oldest_ts() is None


def test_bounds_drop_the_oldest_and_count_them(tmp_path):
    buffer = SampleBuffer(tmp_path / "b.sqlite3", max_rows=3, max_age=timedelta(hours=1))
    buffer.append({"n": "stale"}, NOW - timedelta(hours=2))
    for i in range(4):
        buffer.append({"n": i}, NOW)
    assert buffer.prune(NOW) == 2  # one too old, then one over the row bound
    assert _seqs(buffer.pending(10)[0]) == [2, 3, 4]
    assert buffer.dropped_total() == 2
    assert buffer.depth() == 3
