from __future__ import annotations

from datetime import UTC, datetime, timedelta

from edge.buffer import SampleBuffer

NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)


def test_seq_is_monotonic_across_restarts_and_only_acked_samples_go(tmp_path):
    path = tmp_path / "buffer.sqlite3"
    buffer = SampleBuffer(path, max_rows=100, max_age=timedelta(days=7))
    seqs = [buffer.append({"n": i}, NOW)[0] for i in range(5)]
    assert seqs == [0, 1, 2, 3, 4]
    buffer.delete([0, 1])
    buffer.close()

    reopened = SampleBuffer(path, max_rows=100, max_age=timedelta(days=7))
    assert reopened.append({"n": 5}, NOW) == (5, '{"n":5,"seq":5}')
    assert [seq for seq, _ in reopened.pending(10)] == [2, 3, 4, 5]
    assert [seq for seq, _ in reopened.pending(2, exclude=[2])] == [3, 4]
    assert reopened.pending(1)[0][1] == '{"n":2,"seq":2}'


def test_bounds_drop_the_oldest_and_count_them(tmp_path):
    buffer = SampleBuffer(tmp_path / "b.sqlite3", max_rows=3, max_age=timedelta(hours=1))
    buffer.append({"n": "stale"}, NOW - timedelta(hours=2))
    for i in range(4):
        buffer.append({"n": i}, NOW)
    assert buffer.prune(NOW) == 2  # one too old, then one over the row bound
    assert [seq for seq, _ in buffer.pending(10)] == [2, 3, 4]
    assert buffer.dropped_total() == 2
    assert buffer.depth() == 3
