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

from typing import Any

from sqlalchemy import Connection, text

from contract.commands import CommandType, refused_while_locked
from control_api.errors import ConflictError
from control_api.schemas import SafetyLockOut

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
# Control commands the node has not received yet that were issued before the hub's lock:
# the broker hands them over in order, so they reach the node before the lock and run.
_AHEAD_OF_LOCK = """
SELECT id FROM commands
WHERE node_id = :node AND state IN ('pending', 'sent') AND type = ANY(:control)
    AND issued_at <= :issued_at AND id <> :lock
ORDER BY issued_at, id
"""
CONTROL_TYPES = [t.value for t in CommandType if refused_while_locked(t)]
_REPORTED = """
SELECT safety_locked, safety_lock_source, safety_lock_by, safety_lock_reason,
    safety_locked_since, safety_lock_command_id, safety_lock_reported_at,
    strategy_enabled, strategy
FROM node_status WHERE node_id = :node
"""


def view(conn: Connection, node_id: str) -> SafetyLockOut:
    """The site's lock as the hub sees it (see SafetyLockOut)."""
    row = conn.execute(text(_REPORTED), {"node": node_id}).mappings().first()
    reported: dict[str, Any] = dict(row) if row is not None else {}
    newest = conn.execute(text(_NEWEST_LOCK_COMMAND), {"node": node_id}).mappings().first()
    pending = (
        newest
        if newest is not None and newest["id"] != reported.get("safety_lock_command_id")
        else None
    )
    # The hub's lock on its way (not an unlock).
    locking = pending if pending is not None and pending["params"].get("locked") else None
    ahead = (
        conn.execute(
            text(_AHEAD_OF_LOCK),
            {
                "node": node_id,
                "control": CONTROL_TYPES,
                "issued_at": locking["issued_at"],
                "lock": locking["id"],
            },
        )
        .scalars()
        .all()
        if locking is not None
        else []
    )
    common = {
        "pending_command_id": pending["id"] if pending is not None else None,
        "ahead_of_lock": list(ahead),
        "reported_locked": reported.get("safety_locked"),
        "reported_at": reported.get("safety_lock_reported_at"),
        "strategy_enabled": reported.get("strategy_enabled"),
        "strategy": reported.get("strategy"),
    }
    if reported.get("safety_locked"):
        return SafetyLockOut(
            locked=True,
            source=reported["safety_lock_source"],
            by=reported["safety_lock_by"],
            reason=reported["safety_lock_reason"],
            since=reported["safety_locked_since"],
            **common,
        )
    if locking is not None:
        params = locking["params"]
        return SafetyLockOut(
            locked=True,
            source="remote",
            by=params["requested_by"],
            reason=params["reason"],
            since=locking["issued_at"],
            **common,
        )
    return SafetyLockOut(locked=False, source=None, by=None, reason=None, since=None, **common)


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
