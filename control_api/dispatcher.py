"""Stored commands on their way to the node and back: signed and published, then moved
along by what the node answers or by the clock.

States: `pending` (stored, not yet confirmed by the broker) -> `sent` (the broker has
it) -> `received` (the node accepted it) -> `succeeded` | `failed` | `rejected`; or
`expired` when the deadline passes without a final answer. A state only moves forward;
an answer that cannot move it (a late ack after expiry, a redelivered duplicate) is
still recorded as an event with `applied = false`.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

from pydantic import ValidationError
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from contract.commands import Ack, CommandType, build_command, validate_params
from contract.delivery_worker import RetryLaterError
from control_api import commands
from control_api.broker_link import BrokerLink
from control_api.metrics import ApiMetrics

log = logging.getLogger(__name__)

# The database itself failing (unreachable, restarting, out of connections, a deadlock):
# the same ack can be stored later. Anything else refuses this ack for good.
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeoutError)
FINAL_STATES = ("succeeded", "failed", "rejected", "expired")
_RANK = {"pending": 0, "sent": 1, "received": 2} | dict.fromkeys(FINAL_STATES, 3)


class CommandDispatcher:
    """Publishes stored commands and applies what nodes and the clock say about them;
    counts each command when issued and when it ends."""

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

    def publish_new(self, conn: Connection, command_id: str, command_type: CommandType) -> bool:
        """Counts a command just stored (committed) as issued, then publishes it."""
        self.metrics.commands_total.labels(command_type.value, "issued").inc()
        return self.publish(conn, command_id)

    def publish(self, conn: Connection, command_id: str) -> bool:
        """Signs and publishes a pending command; marks it `sent` once the broker has
        it. False leaves it pending for `republish_pending` to try again. `conn` must
        have no transaction in progress: none stays open while the broker is waited on."""
        with conn.begin():
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
        with conn.begin():
            moved = conn.execute(
                text(
                    "UPDATE commands SET state = 'sent', updated_at = now()"
                    " WHERE id = :id AND state = 'pending'"
                ),
                {"id": command_id},
            ).rowcount
            # An ack can overtake the PUBACK; then `sent` is history, not the state.
            commands.add_event(conn, command_id, "sent", "api", "published", applied=bool(moved))
        return True

    def handle_ack(self, node_id: str, payload: bytes) -> None:
        """Applies one ack from `nodes/{node_id}/acks` in one transaction. A malformed ack,
        or one about a command that is not this node's, is dropped (logged, counted).
        Raises RetryLaterError when the database is unavailable (try the same ack again
        later); any other exception means the ack can never be stored (drop it)."""
        try:
            ack = Ack.model_validate_json(payload)
        except ValidationError as exc:
            self.metrics.acks_dropped_total.labels("malformed").inc()
            log.warning("malformed ack from %s dropped: %s", node_id, exc.errors()[0]["msg"])
            return
        try:
            ended = self._apply(node_id, ack)
        except DATABASE_UNAVAILABLE as exc:
            raise RetryLaterError(f"ack from {node_id} not stored: {exc}") from exc
        if ended is not None:
            self.metrics.commands_total.labels(ended, ack.state).inc()

    def _apply(self, node_id: str, ack: Ack) -> str | None:
        """Records the ack and moves the command on; the command's type when this ack
        ended it, None otherwise."""
        with self.engine.begin() as conn:
            row = conn.execute(
                text(
                    "SELECT state, type FROM commands WHERE id = :id AND node_id = :node FOR UPDATE"
                ),
                {"id": ack.id, "node": node_id},
            ).first()
            if row is None:
                # Unknown, or about another node's command: a node answers only for itself.
                self.metrics.acks_dropped_total.labels("unknown_command").inc()
                log.warning("ack from %s for unknown command %s dropped", node_id, ack.id)
                return None
            state, command_type = row
            duplicate = conn.execute(
                text(
                    "SELECT 1 FROM command_events WHERE command_id = :id AND source = 'node'"
                    " AND state = :state AND detail = :detail"
                ),
                {"id": ack.id, "state": ack.state, "detail": ack.detail},
            ).first()
            if duplicate:
                return None
            applies = state not in FINAL_STATES and _RANK[ack.state] > _RANK[state]
            commands.add_event(conn, ack.id, ack.state, "node", ack.detail, applied=applies)
            if applies:
                conn.execute(
                    text(
                        "UPDATE commands SET state = :state, detail = :detail, updated_at = now()"
                        " WHERE id = :id"
                    ),
                    {"id": ack.id, "state": ack.state, "detail": ack.detail},
                )
        return str(command_type) if applies and ack.state in FINAL_STATES else None

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
                commands.add_event(
                    conn, command_id, "expired", "clock", "deadline passed", applied=True
                )
        for _, command_type in rows:
            self.metrics.commands_total.labels(command_type, "expired").inc()
        return [command_id for command_id, _ in rows]

    def republish_pending(self, now: datetime | None = None) -> int:
        """Publishes again what stayed `pending` (the broker never confirmed it, or the
        API stopped in between); returns how many the broker took."""
        now = now or datetime.now(UTC)
        with self.engine.connect() as conn:
            with conn.begin():
                ids = (
                    conn.execute(
                        text(
                            "SELECT id FROM commands WHERE state = 'pending'"
                            " AND issued_at < :before AND expires_at > :now ORDER BY issued_at"
                        ),
                        {"before": now - self.republish_after, "now": now},
                    )
                    .scalars()
                    .all()
                )
            return sum(self.publish(conn, command_id) for command_id in ids)
