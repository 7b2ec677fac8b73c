"""Node logs as the API shows them: what a node sent in answer to a FETCH_LOGS command,
stored by control_api/log_intake.py. Read per command, chunks in order, a page at a time;
a command's summary (chunks and lines received so far) is part of its detail."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, text

from contract.commands import CommandType
from control_api.auth import Principal
from control_api.errors import InvalidError, NotFoundError, NotVisibleError

SUMMARY = """
SELECT count(*) AS chunks_received, max(chunk_count) AS of,
    coalesce(sum(cardinality(lines)), 0) AS lines_received
FROM node_logs WHERE command_id = :id
"""


def summary(conn: Connection, command_id: str) -> dict[str, Any]:
    """`{"chunks_received", "of", "lines_received"}` for a FETCH_LOGS command (`of` is
    None until its first chunk arrives)."""
    return dict(conn.execute(text(SUMMARY), {"id": command_id}).mappings().one())


def read(
    conn: Connection, user: Principal, node_id: str, command_id: str, from_chunk: int, limit: int
) -> dict[str, Any]:
    """The logs the node sent for its FETCH_LOGS command `command_id`: the summary and up
    to `limit` chunks from `from_chunk` on, in order; `next_chunk` is where the next page
    starts (None after the last chunk received). NotFoundError when the node has no such
    command, NotVisibleError when the command was issued under a tenant the caller does
    not see (the node has moved since), InvalidError when it is not a FETCH_LOGS."""
    command = conn.execute(
        text("SELECT tenant_id, type FROM commands WHERE id = :id AND node_id = :node"),
        {"id": command_id, "node": node_id},
    ).first()
    if command is None:
        raise NotFoundError("command not found")
    tenant_id, command_type = command
    if not user.sees_tenant(tenant_id):
        raise NotVisibleError("command")
    if command_type != CommandType.FETCH_LOGS:
        raise InvalidError(f"command {command_id} is a {command_type}, not a FETCH_LOGS")
    rows = (
        conn.execute(
            text(
                "SELECT chunk, received_at, lines FROM node_logs"
                " WHERE command_id = :id AND chunk >= :from ORDER BY chunk LIMIT :n"
            ),
            {"id": command_id, "from": from_chunk, "n": limit + 1},
        )
        .mappings()
        .all()
    )
    chunks = [dict(row) for row in rows[:limit]]
    return {
        "node_id": node_id,
        "command_id": command_id,
        **summary(conn, command_id),
        "chunks": chunks,
        "next_chunk": rows[limit]["chunk"] if len(rows) > limit else None,
    }
