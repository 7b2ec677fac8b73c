"""The safety lock from the hub's side (contract/site_control.py, docs/control-api.md).

An admin locks or unlocks a site with a SAFETY_LOCK command (stored, audited with the
admin and the reason, signed, always queued: a lock waits in the broker for a node that
is away). The site itself may hold a lock too, which only the site lifts; the agent
reports the lock in its heartbeat (node_status, through the collector), with the last
SAFETY_LOCK it applied.

The hub takes a site as locked when the site reports it locked, or when the hub's
newest SAFETY_LOCK to it (not failed, rejected or expired) is a lock the site has not
reported applying yet. While locked, it refuses to issue any control command
(`contract.commands.COMMAND_KINDS`) with 409, and holds back its settings pushes
(control_api/site_push.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from contract.commands import CommandType
from control_api.errors import ConflictError

LOCKED = (
    "node {node} is safety-locked ({source}, by {by}: {reason}): {command} is refused until"
    " it is unlocked; read-only commands still work"
)

_NEWEST_LOCK_COMMAND = """
SELECT c.id, c.state, c.params, c.issued_at FROM commands c
WHERE c.node_id = :node AND c.type = 'SAFETY_LOCK'
    AND c.state NOT IN ('failed', 'rejected', 'expired')
ORDER BY c.issued_at DESC,
    (SELECT min(e.id) FROM command_events e WHERE e.command_id = c.id) DESC
LIMIT 1
"""
_REPORTED = """
SELECT safety_locked, safety_lock_source, safety_lock_by, safety_lock_reason,
    safety_locked_since, safety_lock_command_id, safety_lock_reported_at,
    strategy_enabled, strategy
FROM node_status WHERE node_id = :node
"""


@dataclass(frozen=True)
class LockView:
    """The site's lock as the hub sees it. `pending_command_id`: the hub's newest lock
    command the site has not reported applying yet (None when the report is current)."""

    locked: bool
    source: str | None
    by: str | None
    reason: str | None
    since: datetime | None
    pending_command_id: str | None
    reported_locked: bool | None
    reported_at: datetime | None
    strategy_enabled: bool | None
    strategy: str | None

    def out(self) -> dict[str, Any]:
        return vars(self)


def view(conn: Connection, node_id: str) -> LockView:
    row = conn.execute(text(_REPORTED), {"node": node_id}).mappings().first()
    reported: dict[str, Any] = dict(row) if row is not None else {}
    newest = conn.execute(text(_NEWEST_LOCK_COMMAND), {"node": node_id}).mappings().first()
    pending = (
        newest
        if newest is not None and newest["id"] != reported.get("safety_lock_command_id")
        else None
    )
    common = {
        "pending_command_id": pending["id"] if pending is not None else None,
        "reported_locked": reported.get("safety_locked"),
        "reported_at": reported.get("safety_lock_reported_at"),
        "strategy_enabled": reported.get("strategy_enabled"),
        "strategy": reported.get("strategy"),
    }
    if reported.get("safety_locked"):
        return LockView(
            True,
            reported["safety_lock_source"],
            reported["safety_lock_by"],
            reported["safety_lock_reason"],
            reported["safety_locked_since"],
            **common,
        )
    if pending is not None and pending["params"].get("locked"):
        params = pending["params"]
        return LockView(
            True, "remote", params["requested_by"], params["reason"], pending["issued_at"], **common
        )
    return LockView(False, None, None, None, None, **common)


def refuse_if_locked(conn: Connection, node_id: str, command_type: CommandType) -> None:
    """ConflictError naming the lock when the site is locked (see the module)."""
    lock = view(conn, node_id)
    if lock.locked:
        raise ConflictError(
            LOCKED.format(
                node=node_id,
                source=lock.source,
                by=lock.by,
                reason=lock.reason,
                command=command_type.value,
            )
        )
