"""Telling a redelivered sample from a conflicting one.

A node's sample is known by its time, `(node_id, ts)` (the table's unique key), and by
its `seq`, which the agent's buffer gives once and never again. Delivery is at least
once, so the same sample arriving again is normal: it is skipped and counted as a
duplicate. A sample that claims a stored sample's time with other values, or its seq
with another time, is no redelivery: it is dead-lettered (CONFLICTING_DUPLICATE,
CONFLICTING_SEQ) and the sample stored first stays. Three checks, each paid for only
where it can find something:

- within the batch, as its rows are gathered (`BatchRows.add`: two dict lookups a row);
- seqs against stored rows (`stored_seq_conflicts`), only for a node's rows numbered at
  or below the highest seq stored for it (`node_status.last_seq`, written in the same
  transaction as the rows): live samples are numbered above it, so the query runs for
  replays and redeliveries only;
- times against stored rows (`stored_time_conflicts`), only for the rows the writer's
  staged path (`ingest.py`) skipped as stored already: a batch takes that path only
  when its direct COPY hit a stored key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from collector.decode import DeadLetter, DecodedMessage, Reason
from collector.telemetry_row import (
    NODE_ID_INDEX,
    REPORTED,
    SEQ_INDEX,
    TS_INDEX,
    as_sent,
    reported,
)
from contract.fields import TS, TelemetryField, wire_body

# Seqs are checked against the rows stored for the last 7 days (an agent's buffer
# replays up to a week). The newest chunks are uncompressed, where the (node_id, seq)
# index finds them; older ones are compressed (migration 0026: 6-hour chunks, 2 hours
# after they end) with batches ordered by seq after ts (0020), each keeping its seq range,
# so a lookup opens only the batches that hold those seqs. A seq reused after 7 days is
# not found.
SEQ_CHECK_WINDOW = timedelta(days=7)

# Each run of consecutive seqs is one index range scan. OFFSET 0 keeps the subquery from
# being flattened into a join, which the planner may run as a scan of every row of the
# node instead.
STORED_SEQS = """
SELECT r.node_id, t.seq, t.ts
FROM unnest(%s::text[], %s::int8[], %s::int8[]) AS r(node_id, first_seq, last_seq)
CROSS JOIN LATERAL (
    SELECT t.seq, t.ts FROM telemetry t
    WHERE t.node_id = r.node_id AND t.seq BETWEEN r.first_seq AND r.last_seq
        AND t.ts >= %s
    OFFSET 0
) t
"""


def _stored_value(field: TelemetryField) -> str:
    """A reported field's stored value as the collector writes it now: a fixed-point
    field of a row stored before migration 0026 is in its float column (its own name),
    so a redelivery of that sample after the upgrade is still seen as one."""
    if field.stored is None:
        return f"t.{field.table_column}"
    legacy = f"round(t.{field.column} * {field.stored.scale})"
    return f"coalesce(t.{field.table_column}, {legacy}::{field.stored.pg_type})"


# What is stored at these nodes and times: one index lookup each, fenced like
# STORED_SEQS. The bounds on ts (the rows' earliest and latest) let the planner leave
# out the chunks outside them, compressed ones above all, before it runs: per lookup,
# runtime exclusion costs the embedded database 3 times as much.
STORED_REPORTS = """
SELECT k.node_id, k.ts, {columns}
FROM unnest(%s::text[], %s::timestamptz[]) AS k(node_id, ts)
CROSS JOIN LATERAL (
    SELECT {values} FROM telemetry t
    WHERE t.node_id = k.node_id AND t.ts = k.ts AND t.ts BETWEEN %s AND %s
    OFFSET 0
) t
""".format(
    columns=", ".join(f"t.{f.table_column}" for f in REPORTED),
    values=", ".join(f"{_stored_value(f)} AS {f.table_column}" for f in REPORTED),
)

# Where a refused row is in `BatchRows.rows`, and why it is refused.
Refusals = Mapping[int, tuple[Reason, str]]


@dataclass(slots=True)
class Conflict:
    item: DecodedMessage
    row: list[Any]
    reason: Reason
    detail: str

    def dead_letter(self) -> DeadLetter:
        """The conflict as its dead letter: the message itself if it is this one sample,
        else the sample as it would have been stored (by wire path)."""
        item = self.item
        if item.live:
            payload = item.payload
        else:
            values = as_sent(self.row)
            values[TS.column] = self.row[TS_INDEX].isoformat()
            payload = json.dumps(wire_body(values), separators=(",", ":")).encode()
        seq = self.row[SEQ_INDEX]
        return DeadLetter(item.topic, item.node_id, self.reason, self.detail, payload, seq)


def _time_conflict(ts: datetime) -> tuple[Reason, str]:
    return (
        Reason.CONFLICTING_DUPLICATE,
        f"the node's sample at {ts.isoformat()} came first with other values",
    )


def _seq_conflict(seq: int, first_ts: datetime) -> tuple[Reason, str]:
    return (Reason.CONFLICTING_SEQ, f"seq {seq} came first with time {first_ts.isoformat()}")


class BatchRows:
    """A batch's telemetry rows in arrival order (`rows`), each with its message
    (`items`). A row that repeats an earlier one exactly is counted (`repeats`) and left
    out; one that conflicts with an earlier one goes to `conflicts`."""

    def __init__(self) -> None:
        self.rows: list[list[Any]] = []
        self.items: list[DecodedMessage] = []
        self.repeats = 0
        self.conflicts: list[Conflict] = []
        self._by_time: dict[tuple[str, datetime], list[Any]] = {}
        self._seq_times: dict[tuple[str, int], datetime] = {}

    def add(self, item: DecodedMessage) -> None:
        """Adds the message's rows (their tenant set)."""
        by_time, seq_times = self._by_time, self._seq_times
        for row in item.rows:
            node_id, ts = row[NODE_ID_INDEX], row[TS_INDEX]
            first = by_time.get((node_id, ts))
            if first is not None:
                if reported(first) == reported(row):
                    self.repeats += 1
                else:
                    self.conflicts.append(Conflict(item, row, *_time_conflict(ts)))
                continue
            seq_key = (node_id, row[SEQ_INDEX])
            first_ts = seq_times.get(seq_key)
            if first_ts is not None:
                self.conflicts.append(Conflict(item, row, *_seq_conflict(seq_key[1], first_ts)))
                continue
            by_time[node_id, ts] = row
            seq_times[seq_key] = ts
            self.rows.append(row)
            self.items.append(item)

    def set_aside(self, refused: Refusals) -> None:
        """Moves the rows at these positions of `rows` to `conflicts`."""
        if not refused:
            return
        rows, items = [], []
        for i, (row, item) in enumerate(zip(self.rows, self.items, strict=True)):
            if i in refused:
                self.conflicts.append(Conflict(item, row, *refused[i]))
            else:
                rows.append(row)
                items.append(item)
        self.rows, self.items = rows, items

    def refused_times(self) -> set[tuple[str, datetime]]:
        """The (node, time) of each conflict that no kept row has: the decisions
        sighted there are the conflicting samples' own."""
        kept = {(row[NODE_ID_INDEX], row[TS_INDEX]) for row in self.rows}
        return {(c.row[NODE_ID_INDEX], c.row[TS_INDEX]) for c in self.conflicts} - kept


def _seq_runs(keys: set[tuple[str, int]]) -> tuple[list[str], list[int], list[int]]:
    """Each node's seqs as runs of consecutive numbers (node ids, firsts, lasts)."""
    nodes: list[str] = []
    firsts: list[int] = []
    lasts: list[int] = []
    for node_id, seq in sorted(keys):
        if nodes and nodes[-1] == node_id and lasts[-1] + 1 == seq:
            lasts[-1] = seq
        else:
            nodes.append(node_id)
            firsts.append(seq)
            lasts.append(seq)
    return nodes, firsts, lasts


def stored_seq_conflicts(
    cur: psycopg.Cursor[Any],
    rows: BatchRows,
    last_seqs: Mapping[str, int | None],
    now: datetime,
) -> Refusals:
    """The rows whose seq is stored for their node under another time (among the rows
    of the last SEQ_CHECK_WINDOW). `last_seqs`: the highest seq stored per node, None if
    none; a row numbered above it cannot conflict and is not looked up."""
    checked = []
    for i, row in enumerate(rows.rows):
        last_seq = last_seqs.get(row[NODE_ID_INDEX])
        if last_seq is not None and row[SEQ_INDEX] <= last_seq:
            checked.append(i)
    if not checked:
        return {}
    keys = {(rows.rows[i][NODE_ID_INDEX], rows.rows[i][SEQ_INDEX]) for i in checked}
    cur.execute(STORED_SEQS, (*_seq_runs(keys), now - SEQ_CHECK_WINDOW))
    stored: dict[tuple[str, int], set[datetime]] = {}
    for node_id, seq, ts in cur:
        stored.setdefault((node_id, seq), set()).add(ts)
    refused = {}
    for i in checked:
        row = rows.rows[i]
        times = stored.get((row[NODE_ID_INDEX], row[SEQ_INDEX]))
        if times and row[TS_INDEX] not in times:
            refused[i] = _seq_conflict(row[SEQ_INDEX], min(times))
    return refused


def stored_time_conflicts(
    cur: psycopg.Cursor[Any], rows: list[list[Any]], skipped: list[int]
) -> Refusals:
    """Of the rows at the positions `skipped` (their node and time are stored already),
    those stored with other values: the rest are redeliveries."""
    keys = [(rows[i][NODE_ID_INDEX], rows[i][TS_INDEX]) for i in skipped]
    times = [ts for _, ts in keys]
    cur.execute(STORED_REPORTS, ([n for n, _ in keys], times, min(times), max(times)))
    stored = {(node_id, ts): tuple(values) for node_id, ts, *values in cur}
    return {
        i: _time_conflict(rows[i][TS_INDEX])
        for i, key in zip(skipped, keys, strict=True)
        if stored.get(key, reported(rows[i])) != reported(rows[i])
    }
