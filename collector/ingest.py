"""Writing decoded batches to TimescaleDB in one transaction per batch.

Every statement is idempotent, so a batch redelivered after a crash (committed but
not yet acknowledged to the broker) changes nothing: telemetry and decisions insert
with ON CONFLICT DO NOTHING on (node_id, ts), node events on (node_id, ts, state),
and node_status only moves forward. A sample that is not a redelivery but claims a
stored sample's time or seq is dead-lettered (`conflicts.py`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from operator import itemgetter
from typing import Any, NamedTuple

import psycopg
from psycopg.types.json import Jsonb

from collector.confirmations import NodeRanges, SeqsByNode, merge
from collector.conflicts import (
    BatchRows,
    Refusals,
    stored_seq_conflicts,
    stored_time_conflicts,
)
from collector.decode import DeadLetter, DecodedMessage, Reason
from collector.inventory import record_inventory
from collector.telemetry_row import (
    DECISION_KEY_COLUMNS,
    DECISION_SIGHTING_COLUMNS,
    NODE_ID_INDEX,
    SEQ_INDEX,
    TELEMETRY_COLUMNS,
    TENANT_ID_INDEX,
    TS_INDEX,
    Decision,
    decision_key,
    sent,
)
from contract.fields import DECISIONS, LATEST, NODE_ID, TELEMETRY, TENANT_ID, TS

# Telemetry is loaded by binary COPY (the fastest load path, formatted in C by psycopg),
# first straight into the hypertable inside a savepoint. COPY has no ON CONFLICT: if
# any row is already stored (a redelivery after a crash, a replay overlapping what
# arrived live), the unique key refuses the COPY and the batch goes through a
# per-transaction staging table and one idempotent INSERT ... SELECT instead, which
# answers the rows it skipped: only those are compared with what is stored, to tell a
# redelivery from a conflict (conflicts.py). The direct load costs the embedded
# database about 40 % less than the staged one, and duplicates are the exception.
# ON COMMIT DROP keeps no session state, so this also works behind PgBouncer.
_COLUMN_LIST = ", ".join(name for name, _ in TELEMETRY_COLUMNS)
COPY_TELEMETRY = f"COPY telemetry ({_COLUMN_LIST}) FROM STDIN (FORMAT BINARY)"
CREATE_STAGE = "CREATE TEMP TABLE telemetry_stage (LIKE telemetry) ON COMMIT DROP"
COPY_STAGE = f"COPY telemetry_stage ({_COLUMN_LIST}) FROM STDIN (FORMAT BINARY)"
INSERT_TELEMETRY = """
WITH inserted AS (
    INSERT INTO telemetry SELECT * FROM telemetry_stage
    ON CONFLICT (node_id, ts) DO NOTHING
    RETURNING node_id, ts
)
SELECT s.node_id, s.ts FROM telemetry_stage s
WHERE NOT EXISTS (SELECT FROM inserted i WHERE i.node_id = s.node_id AND i.ts = s.ts)
"""

# A decision row is kept only when it differs (DECISION_KEY) from the node's previous
# one: the previous row sent (the writer already dropped repeats within the batch), else
# the latest stored decision before it. Rows travel as one JSON parameter, parsed by the
# server.
INSERT_DECISIONS = """
WITH b AS (
    SELECT * FROM json_populate_recordset(NULL::optimizer_decisions, %s::json)
), o AS (
    SELECT b.*, lag(ROW({key})) OVER (PARTITION BY node_id ORDER BY ts) AS prev FROM b
)
INSERT INTO optimizer_decisions ({columns})
SELECT {columns} FROM o
WHERE ROW({key}) IS DISTINCT FROM coalesce(prev, (
    SELECT ROW({stored_key}) FROM optimizer_decisions d
    WHERE d.node_id = o.node_id AND d.ts < o.ts ORDER BY d.ts DESC LIMIT 1))
ON CONFLICT (node_id, ts) DO NOTHING
""".format(
    columns=", ".join(f.column for f in DECISIONS),
    key=", ".join(DECISION_KEY_COLUMNS),
    stored_key=", ".join(f"d.{c}" for c in DECISION_KEY_COLUMNS),
)

INSERT_DEAD_LETTERS = """
INSERT INTO dead_letters (received_at, topic, node_id, reason, detail, payload)
SELECT * FROM unnest(%s::timestamptz[], %s::text[], %s::text[], %s::text[], %s::text[],
    %s::bytea[])
"""

LOOKUP_NODES = """
SELECT n.id, n.tenant_id, n.enabled, s.last_seq
FROM nodes n LEFT JOIN node_status s ON s.node_id = n.id
WHERE n.id = ANY(%s)
"""

# Rows arrive sorted by node id so concurrent collectors lock them in the same order.
# The latest sample's values (LATEST) replace the stored ones only when newer.
_NEWER = "node_status.latest_ts IS NULL OR EXCLUDED.latest_ts > node_status.latest_ts"
UPSERT_SEEN = """
INSERT INTO node_status (node_id, state, last_seen_at, last_seq, clock_drift_s, updated_at,
    latest_ts, {latest})
SELECT node_id, 'online', last_seen_at, last_seq, clock_drift_s, now(), latest_ts, {latest}
FROM unnest(%s::text[], %s::timestamptz[], %s::bigint[], %s::float8[], %s::timestamptz[],
    {latest_arrays}) AS u(node_id, last_seen_at, last_seq, clock_drift_s, latest_ts, {latest})
ON CONFLICT (node_id) DO UPDATE SET
    last_seen_at = greatest(node_status.last_seen_at, EXCLUDED.last_seen_at),
    last_seq = greatest(node_status.last_seq, EXCLUDED.last_seq),
    clock_drift_s = coalesce(EXCLUDED.clock_drift_s, node_status.clock_drift_s),
    {latest_updates},
    latest_ts = greatest(node_status.latest_ts, EXCLUDED.latest_ts),
    updated_at = now()
""".format(
    latest=", ".join(f.column for f in LATEST),
    latest_arrays=", ".join(f"%s::{'text' if f.pg_type == 'text' else 'float8'}[]" for f in LATEST),
    latest_updates=",\n    ".join(
        f"{f.column} = CASE WHEN {_NEWER} THEN EXCLUDED.{f.column} ELSE node_status.{f.column} END"
        for f in LATEST
    ),
)
# Where each is in a telemetry row. node_status keeps them in the units they are sent in,
# at the resolution they are stored at (powers to the watt).
LATEST_INDEXES = tuple((TELEMETRY.index(f), f) for f in LATEST)

INSERT_EVENT = """
INSERT INTO node_events (ts, node_id, tenant_id, state, source, detail)
VALUES (%s, %s, %s, %s, 'status', %s)
ON CONFLICT (node_id, ts, state) DO NOTHING
"""

UPSERT_STATE = """
INSERT INTO node_status (node_id, state, last_seen_at, agent_version, updated_at)
VALUES (%(node_id)s, %(state)s, CASE WHEN %(state)s = 'online' THEN %(received_at)s END,
    %(agent_version)s, now())
ON CONFLICT (node_id) DO UPDATE SET
    state = EXCLUDED.state,
    state_source = 'status',
    last_seen_at = greatest(node_status.last_seen_at, EXCLUDED.last_seen_at),
    agent_version = coalesce(EXCLUDED.agent_version, node_status.agent_version),
    updated_at = now()
"""

# The backlog columns hold what the node's newest status said: newest by its own `ts`
# (statuses are retained, and may come again or late), taken as no later than its
# arrival (a node clock once far ahead, then corrected, would otherwise keep every later
# status from counting). A heartbeat carries `buffer_depth`. An online status without it
# (an agent that does not report it, or the one an agent sends as it connects, before
# its first heartbeat) makes the backlog unknown, so growth is never judged across a
# reconnect; an offline status without it leaves the last report.
# Growth: a depth above the one reported before starts it, from that earlier depth
# (the base), at this report's arrival (the hub's clock); it lasts while every report
# stays above the base, and ends at the first at or below it. So a replay draining a
# backlog, and jitter that comes back to where it rose from, do not count as growth. A
# depth that rose and stays up does: the watchdog's NodeBacklogStuck also asks how long
# the oldest unconfirmed sample has waited.
UPDATE_BACKLOG = """
UPDATE node_status SET
    buffer_depth = %(depth)s::bigint,
    oldest_unconfirmed_age_s = %(age)s::bigint,
    backlog_reported_at = %(ts)s,
    backlog_growth_base = CASE
        WHEN backlog_growing_since IS NOT NULL AND %(depth)s::bigint > backlog_growth_base
            THEN backlog_growth_base
        WHEN backlog_growing_since IS NULL AND %(depth)s::bigint > buffer_depth THEN buffer_depth
    END,
    backlog_growing_since = CASE
        WHEN backlog_growing_since IS NOT NULL AND %(depth)s::bigint > backlog_growth_base
            THEN backlog_growing_since
        WHEN backlog_growing_since IS NULL AND %(depth)s::bigint > buffer_depth
            THEN %(received_at)s
    END
WHERE node_id = %(node_id)s AND (backlog_reported_at IS NULL OR backlog_reported_at < %(ts)s)
"""

# The tunnel columns hold what the node's newest status said about its tunnel (newest
# by its own `ts`, as the backlog's). An offline status (the will, or the agent
# stopping) carries none: a tunnel still open or opening is then closed (the agent's
# ssh ends with it), whatever else the row says stays.
UPDATE_TUNNEL = """
UPDATE node_status SET
    tunnel_state = %(state)s, tunnel_until = %(until)s, tunnel_remote_port = %(remote_port)s,
    tunnel_detail = %(detail)s, tunnel_public_key = %(public_key)s, tunnel_reported_at = %(ts)s
WHERE node_id = %(node_id)s AND (tunnel_reported_at IS NULL OR tunnel_reported_at < %(ts)s)
"""
CLOSE_TUNNEL_OFFLINE = """
UPDATE node_status SET tunnel_state = 'closed', tunnel_until = NULL,
    tunnel_detail = 'the agent went offline', tunnel_reported_at = %(ts)s
WHERE node_id = %(node_id)s AND tunnel_state IN ('open', 'opening')
    AND (tunnel_reported_at IS NULL OR tunnel_reported_at < %(ts)s)
"""

# The lock and strategy columns hold what the node's newest status said (newest by its
# own `ts`); a status without them (the will, an older agent) leaves them as they are:
# a site stays locked while its agent is away.
UPDATE_SITE_CONTROL = """
UPDATE node_status SET
    safety_locked = %(locked)s, safety_lock_source = %(source)s, safety_lock_by = %(by)s,
    safety_lock_reason = %(reason)s, safety_locked_since = %(since)s,
    safety_lock_command_id = %(command_id)s,
    strategy_enabled = coalesce(%(strategy_enabled)s::boolean, strategy_enabled),
    strategy = coalesce(%(strategy)s::text, strategy),
    safety_lock_reported_at = %(ts)s
WHERE node_id = %(node_id)s
    AND (safety_lock_reported_at IS NULL OR safety_lock_reported_at < %(ts)s)
"""


def _copy_rows(cur: psycopg.Cursor[Any], statement: str, rows: list[list[Any]]) -> None:
    with cur.copy(statement) as copy:
        copy.set_types([pg_type for _, pg_type in TELEMETRY_COLUMNS])
        for row in rows:
            copy.write_row(row)


@dataclass(slots=True)
class NodeDecisions:
    """A node's tenant and the decisions its samples in a batch carried, in arrival order."""

    tenant_id: int
    sightings: list[Decision] = field(default_factory=list)


DecisionSightings = dict[str, NodeDecisions]


def _decision_changes(
    by_node: DecisionSightings, refused: set[tuple[str, datetime]]
) -> list[dict[str, Any]]:
    """Per node, in time order, each row whose decision differs from the row before it
    in the batch (the first row is kept: the database compares it with what is stored).
    Rows are built only for changes: most samples repeat the decision before them. A
    sighting at a refused (node, time) is left out, and of two at one time the first
    (the sample kept) counts."""
    changes = []
    for node_id, node_decisions in by_node.items():
        tenant_id, sightings = node_decisions.tenant_id, node_decisions.sightings
        sightings.sort(key=itemgetter(0))  # the sample time comes first (a stable sort)
        previous = None
        previous_ts = None
        for sighting in sightings:
            ts = sighting[0]
            if ts == previous_ts or (node_id, ts) in refused:
                continue
            previous_ts = ts
            key = decision_key(sighting)
            if key != previous:
                row = dict(zip(DECISION_SIGHTING_COLUMNS, sighting, strict=True))
                row[TS.column] = row[TS.column].isoformat()
                row[NODE_ID.column] = node_id
                row[TENANT_ID.column] = tenant_id
                changes.append(row)
                previous = key
    return changes


class Node(NamedTuple):
    tenant_id: int
    enabled: bool
    last_seq: int | None  # the highest seq stored for it; None before its first sample


@dataclass(slots=True)
class NodeSeen:
    """What a batch says about one node, for its node_status row."""

    last_seen_at: datetime
    last_seq: int = -1
    clock_drift_s: float | None = None
    # The newest live sample's time, for the end-to-end lag.
    newest_live_ts: datetime | None = None
    # The newest row kept (live or replayed): its values are the node's latest.
    newest_row: list[Any] | None = None


@dataclass(slots=True)
class WriteResult:
    attempted: int = 0
    inserted: int = 0
    dead: Counter[Reason] = field(default_factory=Counter)
    lags_s: list[float] = field(default_factory=list)
    # Per node, the seqs committed (inserted, or stored already) or dead-lettered for
    # good: what the intake confirms (collector/confirmations.py).
    confirmed: NodeRanges = field(default_factory=dict)
    # The dead letters filed, for a writer that names them to its client (only with
    # BatchWriter's keep_letters: the MQTT intake counts them and pipes no payloads).
    letters: list[DeadLetter] = field(default_factory=list)
    # Inventory history rows dropped to keep each node's bound (collector/inventory.py).
    inventory_history_pruned: int = 0

    def add(self, other: WriteResult) -> None:
        self.attempted += other.attempted
        self.inventory_history_pruned += other.inventory_history_pruned
        self.inserted += other.inserted
        self.dead.update(other.dead)
        self.lags_s.extend(other.lags_s)
        merge(self.confirmed, other.confirmed)
        self.letters.extend(other.letters)


def _letter_seqs(letters: list[DeadLetter]) -> list[int]:
    return [letter.seq for letter in letters if letter.seq is not None]


# Errors that mean "this data", not "this database": retrying cannot help.
REFUSED_DATA = (psycopg.DataError, psycopg.IntegrityError)


class BatchWriter:
    """Writes batches over one connection it owns (autocommit; one explicit
    transaction per batch, so no connection sits idle in a transaction)."""

    def __init__(self, conn: psycopg.Connection[Any], keep_letters: bool = False) -> None:
        self.conn = conn
        self.keep_letters = keep_letters

    def write(self, batch: list[DecodedMessage], now: datetime) -> WriteResult:
        """Writes the batch atomically. If the database refuses some message's data
        (REFUSED_DATA), the batch is split in halves, each written on its own, down to
        the refused messages, which go to dead_letters: one poison message costs a few
        transactions per halving, not one per message, and cannot stall ingest. Any
        other psycopg.Error is raised, with nothing of the batch written."""
        try:
            return self._write(batch, now)
        except REFUSED_DATA as exc:
            if len(batch) == 1:
                item = batch[0]
                detail = str(exc).replace("\x00", "")
                letter = DeadLetter(
                    item.topic, item.node_id, Reason.REJECTED_BY_DATABASE, detail, item.payload
                )
                result = self.quarantine([(item.received_at, letter)])
                if item.node_id is not None:
                    # The letter files the whole message: each sample in it is dead.
                    confirmed = SeqsByNode()
                    confirmed.add(item.node_id, [row[SEQ_INDEX] for row in item.rows])
                    confirmed.add(item.node_id, _letter_seqs(item.dead))
                    result.confirmed = confirmed.ranges()
                return result
            half = len(batch) // 2
            result = self.write(batch[:half], now)
            result.add(self.write(batch[half:], now))
            return result

    def quarantine(self, letters: list[tuple[datetime, DeadLetter]]) -> WriteResult:
        """Files the dead letters (each with its receive time) in one transaction."""
        with self.conn.transaction(), self.conn.cursor() as cur:
            self._insert_dead(cur, letters)
        result = WriteResult(dead=Counter(letter.reason for _, letter in letters))
        if self.keep_letters:
            result.letters = [letter for _, letter in letters]
        return result

    def _write(self, batch: list[DecodedMessage], now: datetime) -> WriteResult:
        result = WriteResult()
        with self.conn.transaction(), self.conn.cursor() as cur:
            nodes = self._lookup_nodes(cur, batch)
            dead: list[tuple[datetime, DeadLetter]] = []
            rows = BatchRows()
            samples: list[DecodedMessage] = []
            decisions: DecisionSightings = {}
            statuses = []
            # Every row of a known, enabled node's message ends stored, skipped as stored
            # already, or dead-lettered (a conflict), all in this transaction: each is
            # confirmed, as is each dead letter with a seq (a sample the decoder refused).
            # An unknown or disabled node's are not: sent again once it is enabled, they
            # are stored.
            confirmed = SeqsByNode()
            for item in batch:
                dead.extend((item.received_at, d) for d in item.dead)
                if not (item.rows or item.status or item.inventory) or item.node_id is None:
                    if item.node_id is not None and item.dead:
                        known = nodes.get(item.node_id)
                        if known is not None and known.enabled:
                            confirmed.add(item.node_id, _letter_seqs(item.dead))
                    continue
                node = nodes.get(item.node_id)
                if node is None or not node.enabled:
                    reason = Reason.UNKNOWN_NODE if node is None else Reason.DISABLED_NODE
                    detail = f"node {item.node_id!r} is {reason.value.split('_')[0]}"
                    letter = DeadLetter(item.topic, item.node_id, reason, detail, item.payload)
                    dead.append((item.received_at, letter))
                    continue
                if item.status is not None:
                    statuses.append((item, node.tenant_id))
                    continue
                if item.inventory is not None:
                    result.inventory_history_pruned += record_inventory(
                        cur, item.inventory, node.tenant_id, item.received_at
                    )
                    continue
                for row in item.rows:
                    row[TENANT_ID_INDEX] = node.tenant_id
                confirmed.add(item.node_id, [row[SEQ_INDEX] for row in item.rows])
                if item.dead:
                    confirmed.add(item.node_id, _letter_seqs(item.dead))
                rows.add(item)
                samples.append(item)
                if item.decisions:
                    sighted = decisions.get(item.node_id)
                    if sighted is None:
                        sighted = decisions[item.node_id] = NodeDecisions(node.tenant_id)
                    sighted.sightings.extend(item.decisions)
            last_seqs = {node_id: node.last_seq for node_id, node in nodes.items()}
            rows.set_aside(stored_seq_conflicts(cur, rows, last_seqs, now))
            if rows.rows:
                result.inserted, refused = self._insert_telemetry(cur, rows.rows)
                rows.set_aside(refused)
            result.attempted = len(rows.rows) + rows.repeats
            dead.extend((c.item.received_at, c.dead_letter()) for c in rows.conflicts)
            if decisions:
                changes = _decision_changes(decisions, rows.refused_times())
                cur.execute(INSERT_DECISIONS, (json.dumps(changes, separators=(",", ":")),))
            seen = self._seen(samples, rows)
            if seen:
                result.lags_s = [
                    (now - s.newest_live_ts).total_seconds()
                    for s in seen.values()
                    if s.newest_live_ts
                ]
                ordered = sorted(seen.items())
                newest = [s.newest_row for _, s in ordered]
                cur.execute(
                    UPSERT_SEEN,
                    [
                        [node_id for node_id, _ in ordered],
                        [s.last_seen_at for _, s in ordered],
                        [s.last_seq for _, s in ordered],
                        [s.clock_drift_s for _, s in ordered],
                        [None if r is None else r[TS_INDEX] for r in newest],
                        *(
                            [None if r is None else sent(f, r[i]) for r in newest]
                            for i, f in LATEST_INDEXES
                        ),
                    ],
                )
            for item, tenant_id in statuses:
                self._record_status(cur, item, tenant_id)
            if dead:
                self._insert_dead(cur, dead)
                result.dead.update(d.reason for _, d in dead)
                if self.keep_letters:
                    result.letters = [d for _, d in dead]
        result.confirmed = confirmed.ranges()
        return result

    @staticmethod
    def _lookup_nodes(cur: psycopg.Cursor[Any], batch: list[DecodedMessage]) -> dict[str, Node]:
        ids = sorted({i.node_id for i in batch if i.node_id is not None})
        if not ids:
            return {}
        cur.execute(LOOKUP_NODES, (ids,))
        return {row[0]: Node(row[1], row[2], row[3]) for row in cur.fetchall()}

    @staticmethod
    def _insert_telemetry(cur: psycopg.Cursor[Any], rows: list[list[Any]]) -> tuple[int, Refusals]:
        """Inserts the rows not stored yet (unique by node and time among themselves).
        Returns how many that was, and the rows (positions) whose node and time are
        stored with other values."""
        try:
            with cur.connection.transaction():
                _copy_rows(cur, COPY_TELEMETRY, rows)
            return len(rows), {}
        except psycopg.errors.UniqueViolation:
            pass
        cur.execute(CREATE_STAGE)
        _copy_rows(cur, COPY_STAGE, rows)
        skipped_keys = set(cur.execute(INSERT_TELEMETRY).fetchall())
        skipped = [
            i for i, row in enumerate(rows) if (row[NODE_ID_INDEX], row[TS_INDEX]) in skipped_keys
        ]
        inserted = len(rows) - len(skipped)
        return inserted, stored_time_conflicts(cur, rows, skipped) if skipped else {}

    @staticmethod
    def _seen(samples: list[DecodedMessage], rows: BatchRows) -> dict[str, NodeSeen]:
        """What the batch says about each node it heard samples from: when (every
        message counts) and, from the rows kept, its newest seq and its clock."""
        seen: dict[str, NodeSeen] = {}
        for item in samples:
            assert item.node_id is not None
            seen_node = seen.get(item.node_id)
            if seen_node is None:
                seen[item.node_id] = NodeSeen(item.received_at)
            elif item.received_at > seen_node.last_seen_at:
                seen_node.last_seen_at = item.received_at
        for row, item in zip(rows.rows, rows.items, strict=True):
            seen_node = seen[row[NODE_ID_INDEX]]
            if row[SEQ_INDEX] > seen_node.last_seq:
                seen_node.last_seq = row[SEQ_INDEX]
            newest = seen_node.newest_row
            if newest is None or row[TS_INDEX] > newest[TS_INDEX]:
                seen_node.newest_row = row
            if item.live:
                # Only a live sample's timestamp reflects the node's clock right now.
                ts = row[TS_INDEX]
                seen_node.clock_drift_s = (item.received_at - ts).total_seconds()
                if seen_node.newest_live_ts is None or ts > seen_node.newest_live_ts:
                    seen_node.newest_live_ts = ts
        return seen

    @staticmethod
    def _record_status(cur: psycopg.Cursor[Any], item: DecodedMessage, tenant_id: int) -> None:
        status = item.status
        assert status is not None
        detail: dict[str, Any] = {
            "agent_version": status.get("agent_version"),
            "received_at": item.received_at.isoformat(),
        }
        tunnel = status.get("tunnel")
        if tunnel is not None:
            # The node publishes a status at each change of its tunnel, so node_events
            # (kept without retention) holds the tunnel's history: opened, closed by
            # whom, expired, failed.
            detail["tunnel"] = _event_detail(tunnel, leave_out="public_key")
        lock = status.get("safety_lock")
        strategy = status.get("strategy")
        if lock is not None:
            # node_events holds the lock's history too: who locked and unlocked the
            # site, and when (the agent publishes a status at each change).
            detail["safety_lock"] = _event_detail(lock)
        cur.execute(
            INSERT_EVENT,
            (status["ts"], item.node_id, tenant_id, status["state"], Jsonb(detail)),
        )
        cur.execute(
            UPSERT_STATE,
            {
                "node_id": item.node_id,
                "state": status["state"],
                "received_at": item.received_at,
                "agent_version": status.get("agent_version"),
            },
        )
        depth = status.get("buffer_depth")
        if depth is not None or status["state"] == "online":
            cur.execute(
                UPDATE_BACKLOG,
                {
                    "node_id": item.node_id,
                    "depth": depth,
                    "age": status.get("oldest_unconfirmed_age_s"),
                    "ts": min(status["ts"], item.received_at),
                    "received_at": item.received_at,
                },
            )
        at = {"node_id": item.node_id, "ts": min(status["ts"], item.received_at)}
        if tunnel is not None:
            cur.execute(
                UPDATE_TUNNEL,
                {
                    **at,
                    "state": tunnel["state"],
                    "until": tunnel.get("until"),
                    "remote_port": tunnel.get("remote_port"),
                    "detail": tunnel.get("detail"),
                    "public_key": tunnel.get("public_key"),
                },
            )
        elif status["state"] == "offline":
            cur.execute(CLOSE_TUNNEL_OFFLINE, at)
        if lock is not None:
            cur.execute(
                UPDATE_SITE_CONTROL,
                {
                    **at,
                    "locked": lock["locked"],
                    "source": lock.get("source"),
                    "by": lock.get("by"),
                    "reason": lock.get("reason"),
                    "since": lock.get("since"),
                    "command_id": lock.get("remote_command_id"),
                    "strategy_enabled": strategy["enabled"] if strategy else None,
                    "strategy": strategy["name"] if strategy else None,
                },
            )

    @staticmethod
    def _insert_dead(cur: psycopg.Cursor[Any], dead: list[tuple[datetime, DeadLetter]]) -> None:
        cur.execute(
            INSERT_DEAD_LETTERS,
            [
                [at for at, _ in dead],
                [d.topic for _, d in dead],
                [d.node_id for _, d in dead],
                [d.reason.value for _, d in dead],
                [d.detail for _, d in dead],
                [d.payload for _, d in dead],
            ],
        )


def _event_detail(part: Mapping[str, object], leave_out: str | None = None) -> dict[str, Any]:
    """A status part as node_events' JSON detail: times as ISO text."""
    return {
        k: v.isoformat() if isinstance(v, datetime) else v
        for k, v in part.items()
        if k != leave_out
    }
