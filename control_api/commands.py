"""Commands: stored first, then signed and published, then moved along by what the node
answers or by the clock.

States: `pending` (stored, not yet confirmed by the broker) -> `sent` (the broker has
it) -> `received` (the node accepted it) -> `succeeded` | `failed` | `rejected`; or
`expired` when the deadline passes without a final answer. A state only moves forward;
an answer that cannot move it (a late ack after expiry, a redelivered duplicate) is
still recorded as an event with `applied = false`.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection, Engine, text

from contract.commands import Ack, CommandType, build_command, validate_params
from control_api.broker_link import BrokerLink
from control_api.metrics import ApiMetrics

log = logging.getLogger(__name__)

OPEN_STATES = ("pending", "sent", "received")
FINAL_STATES = ("succeeded", "failed", "rejected", "expired")
_RANK = {"pending": 0, "sent": 1, "received": 2} | dict.fromkeys(FINAL_STATES, 3)


@dataclass(frozen=True)
class NewCommand:
    id: str
    node_id: str
    tenant_id: int
    type: CommandType
    params: dict[str, Any]
    issued_at: datetime
    expires_at: datetime


def new_command(
    node_id: str,
    tenant_id: int,
    command_type: CommandType,
    params: dict[str, Any],
    ttl: timedelta,
    now: datetime | None = None,
) -> NewCommand:
    issued_at = (now or datetime.now(UTC)).replace(microsecond=0)
    return NewCommand(
        id=uuid.uuid4().hex,
        node_id=node_id,
        tenant_id=tenant_id,
        type=command_type,
        params=params,
        issued_at=issued_at,
        expires_at=issued_at + ttl,
    )


def insert(
    conn: Connection,
    command: NewCommand,
    issued_by: int | None,
    idempotency_key: str | None,
    queued: bool,
) -> None:
    """Stores the command as `pending` with its first event (the caller's transaction)."""
    conn.execute(
        text(
            """
            INSERT INTO commands (id, node_id, tenant_id, type, params, state, queued,
                issued_by, idempotency_key, issued_at, expires_at)
            VALUES (:id, :node_id, :tenant_id, :type, CAST(:params AS jsonb), 'pending',
                :queued, :issued_by, :key, :issued_at, :expires_at)
            """
        ),
        {
            "id": command.id,
            "node_id": command.node_id,
            "tenant_id": command.tenant_id,
            "type": command.type.value,
            "params": json.dumps(command.params),
            "queued": queued,
            "issued_by": issued_by,
            "key": idempotency_key,
            "issued_at": command.issued_at,
            "expires_at": command.expires_at,
        },
    )
    _event(conn, command.id, "pending", "api", "stored", applied=True)


def find_by_idempotency_key(conn: Connection, user_id: int, key: str) -> dict[str, Any] | None:
    row = (
        conn.execute(
            text("SELECT * FROM commands WHERE issued_by = :user AND idempotency_key = :key"),
            {"user": user_id, "key": key},
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


def _event(
    conn: Connection, command_id: str, state: str, source: str, detail: str, applied: bool
) -> None:
    conn.execute(
        text(
            "INSERT INTO command_events (command_id, state, source, detail, applied)"
            " VALUES (:id, :state, :source, :detail, :applied)"
        ),
        {"id": command_id, "state": state, "source": source, "detail": detail, "applied": applied},
    )


def get(conn: Connection, command_id: str) -> dict[str, Any] | None:
    """The command with its events, oldest first."""
    row = (
        conn.execute(text("SELECT * FROM commands WHERE id = :id"), {"id": command_id})
        .mappings()
        .first()
    )
    if row is None:
        return None
    events = (
        conn.execute(
            text(
                "SELECT ts, state, source, detail, applied FROM command_events"
                " WHERE command_id = :id ORDER BY id"
            ),
            {"id": command_id},
        )
        .mappings()
        .all()
    )
    return {**row, "events": [dict(e) for e in events]}


def list_for_node(conn: Connection, node_id: str, limit: int) -> list[dict[str, Any]]:
    rows = (
        conn.execute(
            text(
                "SELECT * FROM commands WHERE node_id = :node ORDER BY issued_at DESC, id LIMIT :n"
            ),
            {"node": node_id, "n": limit},
        )
        .mappings()
        .all()
    )
    return [dict(r) for r in rows]


class CommandDispatcher:
    """Publishes stored commands and applies what nodes and the clock say about them."""

    def __init__(
        self,
        engine: Engine,
        link: BrokerLink,
        metrics: ApiMetrics,
        result_grace: timedelta,
        republish_after: timedelta,
    ) -> None:
        self.engine = engine
        self.link = link
        self.metrics = metrics
        self.result_grace = result_grace
        self.republish_after = republish_after

    def publish(self, command_id: str) -> bool:
        """Signs and publishes a pending command; marks it `sent` once the broker has
        it. False leaves it pending for `republish_pending` to try again."""
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    text(
                        """
                    SELECT c.id, c.node_id, c.type, c.params, c.issued_at, c.expires_at,
                        c.state, n.command_secret
                    FROM commands c JOIN nodes n ON n.id = c.node_id WHERE c.id = :id
                    """
                    ),
                    {"id": command_id},
                )
                .mappings()
                .first()
            )
        if row is None or row["state"] != "pending" or not row["command_secret"]:
            return False
        command_type = CommandType(row["type"])
        body = build_command(
            row["node_id"],
            row["command_secret"].encode(),
            row["id"],
            command_type,
            validate_params(command_type, row["params"]),
            row["issued_at"],
            row["expires_at"],
        )
        if not self.link.publish_command(row["node_id"], json.dumps(body)):
            log.warning("broker did not confirm command %s; will retry", command_id)
            return False
        with self.engine.begin() as conn:
            moved = conn.execute(
                text(
                    "UPDATE commands SET state = 'sent', updated_at = now()"
                    " WHERE id = :id AND state = 'pending'"
                ),
                {"id": command_id},
            ).rowcount
            # An ack can overtake the PUBACK; then `sent` is history, not the state.
            _event(conn, command_id, "sent", "api", "published", applied=bool(moved))
        return True

    def handle_ack(self, node_id: str, payload: bytes) -> None:
        """Applies one ack from `nodes/{node_id}/acks`; raises only when it could not be
        stored (so it is retried)."""
        try:
            ack = Ack.model_validate_json(payload)
        except ValidationError as exc:
            log.warning("malformed ack from %s dropped: %s", node_id, exc.errors()[0]["msg"])
            return
        with self.engine.begin() as conn:
            row = conn.execute(
                text(
                    "SELECT state, type FROM commands WHERE id = :id AND node_id = :node FOR UPDATE"
                ),
                {"id": ack.id, "node": node_id},
            ).first()
            if row is None:
                # Unknown, or about another node's command: a node answers only for itself.
                log.warning("ack from %s for unknown command %s dropped", node_id, ack.id)
                return
            state, command_type = row
            duplicate = conn.execute(
                text(
                    "SELECT 1 FROM command_events WHERE command_id = :id AND source = 'node'"
                    " AND state = :state AND detail = :detail"
                ),
                {"id": ack.id, "state": ack.state, "detail": ack.detail},
            ).first()
            if duplicate:
                return
            applies = state not in FINAL_STATES and _RANK[ack.state] > _RANK[state]
            _event(conn, ack.id, ack.state, "node", ack.detail, applied=applies)
            if applies:
                conn.execute(
                    text(
                        "UPDATE commands SET state = :state, detail = :detail, updated_at = now()"
                        " WHERE id = :id"
                    ),
                    {"id": ack.id, "state": ack.state, "detail": ack.detail},
                )
        if applies and ack.state in FINAL_STATES:
            self.metrics.commands.labels(command_type, ack.state).inc()

    def expire_overdue(self, now: datetime | None = None) -> list[str]:
        """Expires commands past their deadline with no final answer; returns their ids.
        One the node has `received` gets `result_grace` more to finish."""
        now = now or datetime.now(UTC)
        with self.engine.begin() as conn:
            rows = conn.execute(
                text(
                    """
                    UPDATE commands SET state = 'expired', updated_at = now(),
                        detail = 'no answer from the node before the deadline'
                    WHERE (state IN ('pending', 'sent') AND expires_at < :now)
                       OR (state = 'received' AND expires_at < :received_deadline)
                    RETURNING id, type
                    """
                ),
                {"now": now, "received_deadline": now - self.result_grace},
            ).all()
            for command_id, _ in rows:
                _event(conn, command_id, "expired", "clock", "deadline passed", applied=True)
        for _, command_type in rows:
            self.metrics.commands.labels(command_type, "expired").inc()
        return [command_id for command_id, _ in rows]

    def republish_pending(self, now: datetime | None = None) -> int:
        """Publishes again what stayed `pending` (the broker never confirmed it, or the
        API stopped in between); returns how many the broker took."""
        now = now or datetime.now(UTC)
        with self.engine.connect() as conn:
            ids = (
                conn.execute(
                    text(
                        "SELECT id FROM commands WHERE state = 'pending' AND issued_at < :before"
                        " AND expires_at > :now ORDER BY issued_at"
                    ),
                    {"before": now - self.republish_after, "now": now},
                )
                .scalars()
                .all()
            )
        return sum(self.publish(command_id) for command_id in ids)
