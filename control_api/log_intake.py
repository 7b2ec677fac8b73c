"""Storing the log chunks nodes send in answer to FETCH_LOGS (`nodes/{node_id}/logs`).

Called on the broker link's `logs` worker thread (control_api/broker_link.py), never on
paho's network thread; the chunk is acknowledged to the broker once this returns, that
is once it is committed or deliberately dropped. Everything in a chunk is untrusted: the
topic's node id is the only authority (the broker lets a node publish only on its own
topics), and a chunk is stored only for a FETCH_LOGS command of that very node. Dropped,
logged and counted in `wattfleet_api_log_chunks_dropped_total{reason}`:

- `too_large`: more than MAX_LOG_CHUNK_BYTES, left unread;
- `malformed`: not a `LogChunk` (invalid JSON or UTF-8, NaN, too deep, NUL or lone
  surrogates, wrong types, over the line bounds, `chunk` not below `of`);
- `no_command_id`: a chunk without `command_id`, as agents before it sent; with nothing
  to attach it to and no command to bound it by, it is not stored;
- `unknown_command`: no FETCH_LOGS command of this node has that id (another node's
  command, or none at all);
- `inconsistent`: its `of` differs from the command's chunks stored before;
- `over_limit`: it would take the command's stored lines past the lines it asked for;
- `refused` (counted by the worker): the database refused it for good.

A chunk already stored (a redelivery) changes nothing. While the database is unavailable
the chunk is retried later (`RetryLaterError`), holding the chunks behind it only.
"""

from __future__ import annotations

import logging

from pydantic import ValidationError
from pydantic_core import from_json
from sqlalchemy import Engine, text

from contract.commands import MAX_LOG_CHUNK_BYTES, CommandType, FetchLogsParams, LogChunk
from contract.delivery_worker import RetryLaterError
from control_api.dispatcher import DATABASE_UNAVAILABLE
from control_api.metrics import ApiMetrics

log = logging.getLogger(__name__)


class LogIntake:
    def __init__(self, engine: Engine, metrics: ApiMetrics) -> None:
        self.engine = engine
        self.metrics = metrics

    def handle_chunk(self, node_id: str, payload: bytes) -> None:
        """Stores one chunk from `nodes/{node_id}/logs` in one transaction, or drops it
        (logged, counted). Raises RetryLaterError when the database is unavailable; any
        other exception means the chunk can never be stored (drop it)."""
        if len(payload) > MAX_LOG_CHUNK_BYTES:
            self._drop(node_id, "too_large", f"{len(payload)} bytes, over {MAX_LOG_CHUNK_BYTES}")
            return
        try:
            # pydantic's parser is not recursive and refuses nesting deeper than a few
            # hundred levels, invalid UTF-8 and lone surrogates; NaN and infinity too here,
            # which model_validate_json would let through in an ignored key.
            document = from_json(payload, allow_inf_nan=False)
        except ValueError as exc:
            self._drop(node_id, "malformed", f"invalid JSON: {exc}")
            return
        try:
            chunk = LogChunk.model_validate(document)
        except ValidationError as exc:
            errors = exc.errors()
            unnamed = any(e["type"] == "missing" and e["loc"] == ("command_id",) for e in errors)
            reason = "no_command_id" if unnamed else "malformed"
            self._drop(node_id, reason, errors[0]["msg"])
            return
        try:
            refused = self._store(node_id, chunk)
        except DATABASE_UNAVAILABLE as exc:
            raise RetryLaterError(f"log chunk from {node_id} not stored: {exc}") from exc
        if refused is not None:
            self._drop(node_id, *refused)

    def _drop(self, node_id: str, reason: str, detail: str) -> None:
        self.metrics.log_chunks_dropped_total.labels(reason).inc()
        log.warning("log chunk from %s dropped (%s): %s", node_id, reason, detail)

    def _store(self, node_id: str, chunk: LogChunk) -> tuple[str, str] | None:
        """Inserts the chunk unless it is refused: then (reason, detail)."""
        with self.engine.begin() as conn:
            # Locked: the bounds below hold across API instances storing the same
            # command's chunks at once.
            command = conn.execute(
                text(
                    "SELECT params, issued_at FROM commands"
                    " WHERE id = :id AND node_id = :node AND type = :type FOR UPDATE"
                ),
                {"id": chunk.command_id, "node": node_id, "type": CommandType.FETCH_LOGS.value},
            ).first()
            if command is None:
                return "unknown_command", f"no FETCH_LOGS command {chunk.command_id} of this node"
            params, issued_at = command
            stored = conn.execute(
                text(
                    "SELECT max(chunk_count), coalesce(sum(cardinality(lines)), 0),"
                    " coalesce(bool_or(chunk = :chunk), false)"
                    " FROM node_logs WHERE command_id = :id AND issued_at = :issued_at"
                ),
                {"id": chunk.command_id, "issued_at": issued_at, "chunk": chunk.chunk},
            ).one()
            chunk_count, lines_stored, already = stored
            if already:
                return None  # a redelivery
            if chunk_count is not None and chunk_count != chunk.of:
                return "inconsistent", f"chunk of {chunk.of}, earlier ones of {chunk_count}"
            asked = FetchLogsParams.model_validate(params).lines
            if lines_stored + len(chunk.lines) > asked:
                return "over_limit", (
                    f"{lines_stored} lines stored and {len(chunk.lines)} more;"
                    f" {chunk.command_id} asked for {asked}"
                )
            conn.execute(
                text(
                    "INSERT INTO node_logs (issued_at, command_id, chunk, chunk_count, lines)"
                    " VALUES (:issued_at, :id, :chunk, :of, :lines)"
                    " ON CONFLICT DO NOTHING"
                ),
                {
                    "issued_at": issued_at,
                    "id": chunk.command_id,
                    "chunk": chunk.chunk,
                    "of": chunk.of,
                    "lines": chunk.lines,
                },
            )
        return None
