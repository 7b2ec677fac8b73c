"""The store-and-forward buffer: every sample is written here before it is published,
and deleted only once the hub confirmed it committed (`nodes/{id}/ingested`), or, with
`ingest_confirmations: false` for hubs that predate confirmations, once the broker
acknowledged it (PUBACK).

SQLite in WAL mode with synchronous=FULL: a committed sample survives kill -9 and a power
cut. The buffer also owns the node's monotonic `seq`, so numbering survives restarts and
the replay order is `seq` order, never wall-clock order.

Bounded by age and by row count; when either is exceeded the oldest samples are dropped
and counted in `dropped_total` (persisted), so the loss is reported, never silent.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Container, Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (seq INTEGER PRIMARY KEY, ts TEXT NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counters VALUES ('next_seq', 0), ('dropped_total', 0);
CREATE TABLE IF NOT EXISTS meter (id INTEGER PRIMARY KEY CHECK (id = 0), point TEXT NOT NULL);
"""


class SampleBuffer:
    """Thread-safe (one lock around the one connection)."""

    def __init__(self, path: Path, max_rows: int, max_age: timedelta) -> None:
        self.max_rows = max_rows
        self.max_age = max_age
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def append(
        self, sample: dict[str, Any], ts: datetime, meter_point: str | None = None
    ) -> tuple[int, str]:
        """Stores the sample under the next seq (set in its body too); returns the seq
        and the stored JSON body, which is also what goes on the wire. `meter_point`
        (edge/energy_meter.py) replaces the stored one in the same transaction, so the
        next sample's energy starts exactly where this one's ended, across a crash too."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                (seq,) = self._db.execute(
                    "UPDATE counters SET value = value + 1 WHERE name = 'next_seq'"
                    " RETURNING value - 1"
                ).fetchone()
                body = json.dumps({**sample, "seq": seq}, separators=(",", ":"))
                self._db.execute(
                    "INSERT INTO samples (seq, ts, body) VALUES (?, ?, ?)",
                    (seq, ts.isoformat(), body),
                )
                if meter_point is not None:
                    self._db.execute(
                        "INSERT OR REPLACE INTO meter (id, point) VALUES (0, ?)", (meter_point,)
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return int(seq), body

    def pending(
        self, limit: int, from_seq: int = 0, skip: Container[int] = ()
    ) -> tuple[list[tuple[int, str]], int]:
        """Up to `limit` buffered (seq, JSON body) pairs from `from_seq` on, in seq order,
        leaving out `skip` (samples in flight); and the seq to continue from (one past
        the last one looked at)."""
        out: list[tuple[int, str]] = []
        after = from_seq
        with self._lock:
            cursor = self._db.execute(
                "SELECT seq, body FROM samples WHERE seq >= ? ORDER BY seq", (from_seq,)
            )
            for seq, body in cursor:
                after = seq + 1
                if seq in skip:
                    continue
                out.append((seq, body))
                if len(out) >= limit:
                    break
        return out, after

    def delete_ranges(self, ranges: Iterable[tuple[int, int]]) -> int:
        """Forgets the samples in these inclusive seq ranges, in one transaction; seqs no
        longer buffered are skipped. Returns how many samples went."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                before = self._db.total_changes
                self._db.executemany("DELETE FROM samples WHERE seq BETWEEN ? AND ?", ranges)
                deleted = self._db.total_changes - before
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return deleted

    def prune(self, now: datetime) -> int:
        """Drops samples beyond the age or row bound, oldest first; returns how many."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                old = self._db.execute(
                    "DELETE FROM samples WHERE ts < ?", ((now - self.max_age).isoformat(),)
                ).rowcount
                (count,) = self._db.execute("SELECT count(*) FROM samples").fetchone()
                over = max(0, count - self.max_rows)
                if over:
                    self._db.execute(
                        "DELETE FROM samples WHERE seq IN"
                        " (SELECT seq FROM samples ORDER BY seq LIMIT ?)",
                        (over,),
                    )
                dropped = old + over
                if dropped:
                    self._db.execute(
                        "UPDATE counters SET value = value + ? WHERE name = 'dropped_total'",
                        (dropped,),
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return int(dropped)

    def depth(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM samples").fetchone()[0])

    def oldest_ts(self) -> datetime | None:
        """When the oldest buffered sample was taken; None when the buffer is empty."""
        with self._lock:
            row = self._db.execute("SELECT ts FROM samples ORDER BY seq LIMIT 1").fetchone()
        return None if row is None else datetime.fromisoformat(row[0])

    def meter_point(self) -> str | None:
        """The meter point stored with the newest sample that had one."""
        with self._lock:
            row = self._db.execute("SELECT point FROM meter WHERE id = 0").fetchone()
        return None if row is None else str(row[0])

    def dropped_total(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM counters WHERE name = 'dropped_total'")
            return int(row.fetchone()[0])
