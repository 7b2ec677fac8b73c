"""Commands to a node: the rules of issuing one (idempotent under a key, refused for a
disabled node, for an offline one unless queued, and a control command for a
safety-locked site), the command store, and node config pushes. A command is stored and
audited (committed) before the dispatcher (control_api/dispatcher.py, which also
describes the states) signs and publishes it.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError

from contract.commands import CommandType, ConfigPushParams, refused_while_locked
from contract.node_config import SITE_HELD_KEYS
from control_api import node_config, node_logs, safety_lock, site_settings
from control_api.audit import NoteAttempt, RecordChange
from control_api.auth import Principal
from control_api.errors import ConflictError, NotFoundError, NotVisibleError
from control_api.nodes import Node
from control_api.schemas import CommandAcceptedOut, ConfigPushOut

if TYPE_CHECKING:  # the dispatcher stores its events here: a run-time import would loop
    from control_api.dispatcher import CommandDispatcher

OFFLINE = (
    "node {} is {}: the command would wait at the broker until it reconnects; "
    "send it again with queue=true to do that"
)


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


@dataclass(frozen=True)
class Sender:
    """Who sends a command to which node, and how: what every sending route shares."""

    conn: Connection
    user: Principal
    node: Node
    idempotency_key: str | None
    # Send even when the node is not online: the command waits in its broker session.
    queue: bool
    ttl: timedelta
    dispatcher: CommandDispatcher
    record: RecordChange
    # What is attempted, for the audit row of a refusal.
    attempt: NoteAttempt


def issue(
    sender: Sender,
    command_type: CommandType,
    params: dict[str, Any],
    config: tuple[int, dict[str, Any]] | None = None,
) -> CommandAcceptedOut:
    """Stores and audits the command (committed; with the config version it pushes, if
    any), then has the dispatcher sign and publish it: `sent` once the broker has it,
    `pending` while the dispatcher retries. A repeated Idempotency-Key returns the first
    command. ConflictError when the key was used for another command, or the node is
    disabled, or not online and `queue` is off, or the command is a control command
    and the site is safety-locked (control_api/safety_lock.py); the audit row of a
    refusal says what was refused, as that of the command says what was sent."""
    conn, node = sender.conn, sender.node
    attempt = {"type": command_type.value, "params": params, "queued": sender.queue}
    sender.attempt(attempt)
    if sender.idempotency_key:
        earlier = find_by_idempotency_key(conn, sender.user.id, sender.idempotency_key)
        if earlier is not None:
            if (
                earlier["node_id"] != node.id
                or earlier["type"] != command_type
                or earlier["params"] != params
            ):
                raise ConflictError("Idempotency-Key was used for a different command")
            return CommandAcceptedOut(id=earlier["id"], state=earlier["state"])
    if not node.enabled:
        raise ConflictError(f"node {node.id} is disabled")
    control = refused_while_locked(command_type)
    if control or command_type is CommandType.SAFETY_LOCK:
        # One at a time per node, to the commit: a control command checked while a lock
        # is being stored waits for it and sees it, rather than slipping in between.
        conn.execute(text("SELECT 1 FROM nodes WHERE id = :id FOR UPDATE"), {"id": node.id})
    if control:
        safety_lock.refuse_if_locked(conn, node.id, command_type)
    state = (
        conn.execute(
            text("SELECT state FROM node_status WHERE node_id = :id"), {"id": node.id}
        ).scalar()
        or "unknown"
    )
    if state != "online" and not sender.queue:
        raise ConflictError(OFFLINE.format(node.id, state))
    command = new_command(node.id, node.tenant_id, command_type, params, sender.ttl)
    try:
        insert(conn, command, sender.user.id, sender.idempotency_key, sender.queue)
        if config is not None:
            version, pushed = config
            node_config.insert(conn, node.id, version, pushed, command.id, sender.user.id)
        sender.record(conn, {"command_id": command.id, **attempt})
        conn.commit()
    except IntegrityError as exc:
        conn.rollback()
        # A concurrent request took the same Idempotency-Key or config version.
        raise ConflictError("a concurrent request conflicted; retry") from exc
    sent = sender.dispatcher.publish_new(conn, command.id, command_type)
    return CommandAcceptedOut(id=command.id, state="sent" if sent else "pending")


def push_config(sender: Sender, config: dict[str, Any]) -> ConfigPushOut:
    """Validates the whole config against the contract's node config (NodeConfigError
    says where it is wrong), with the hub's site settings (zone, tariffs) filled in,
    stores it as the node's next version and pushes it as CONFIG_PUSH (see `issue`)."""
    _refuse_hub_keys(config)
    return _push_whole(sender, config)


def patch_config(sender: Sender, patch: dict[str, Any]) -> ConfigPushOut:
    """Applies a JSON merge patch (RFC 7396) to the config the node reports it runs (or,
    for an agent that predates reports, the newest pushed to it) and pushes the result
    as a whole config (`push_config`). ConflictError when the hub knows no config of
    the node yet."""
    _refuse_hub_keys(patch)
    try:
        base = node_config.current(sender.conn, sender.node.id)["config"]
    except NotFoundError as exc:
        raise ConflictError(f"{exc}: push a whole config with PUT first") from exc
    return _push_whole(sender, node_config.merge_patch(base, patch))


def _refuse_hub_keys(config: dict[str, Any]) -> None:
    # In any case: a key in another case than its setting's is refused anyway (NodeConfig),
    # but named here for what it is.
    keys = {key.lower(): key for key in config if isinstance(key, str)}
    given = [keys[key] for key in site_settings.HUB_KEYS if key in keys]
    if given:
        raise node_config.NodeConfigError(
            f"{', '.join(given)}: the hub's; set them with PATCH /nodes/{{id}} (timezone)"
            " and the tariff routes, and every push carries them"
        )
    # The node keeps its own whatever a push says (edge/config_push.py): refused here so
    # that no stored version claims what the node will not run.
    held = [keys[key] for key in SITE_HELD_KEYS if key in keys]
    if held:
        raise node_config.NodeConfigError(
            f"{', '.join(held)}: the site's own (remote access, safety lock); only the"
            " agent's config file on the Pi sets them"
        )


def _push_whole(sender: Sender, config: dict[str, Any]) -> ConfigPushOut:
    conn, node_id = sender.conn, sender.node.id
    settings = site_settings.of_site(conn, site_settings.site(conn, node_id))
    config = node_config.validate_pushed_config(node_id, {**config, **settings.config()})
    version = node_config.next_version(conn, node_id)
    params = ConfigPushParams(config=config, version=version).model_dump(mode="json")
    accepted = issue(sender, CommandType.CONFIG_PUSH, params, config=(version, config))
    return ConfigPushOut(id=accepted.id, state=accepted.state, version=version, config=config)


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
    add_event(conn, command.id, "pending", "api", "stored", applied=True)


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


def add_event(
    conn: Connection, command_id: str, state: str, source: str, detail: str, applied: bool
) -> None:
    """One line of the command's history (the caller's transaction): `source` is `api`,
    `node` or `clock`; `applied` says whether it moved the state."""
    conn.execute(
        text(
            "INSERT INTO command_events (command_id, state, source, detail, applied)"
            " VALUES (:id, :state, :source, :detail, :applied)"
        ),
        {"id": command_id, "state": state, "source": source, "detail": detail, "applied": applied},
    )


def visible(conn: Connection, user: Principal, command_id: str) -> dict[str, Any]:
    """The command with its events, oldest first, and for a FETCH_LOGS the summary of the
    logs received (`logs`, None for other types), if the caller may see it;
    NotFoundError or NotVisibleError otherwise."""
    row = (
        conn.execute(text("SELECT * FROM commands WHERE id = :id"), {"id": command_id})
        .mappings()
        .first()
    )
    if row is None:
        raise NotFoundError("command not found")
    if not user.sees_tenant(row["tenant_id"]):
        raise NotVisibleError("command")
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
    logs = node_logs.summary(conn, command_id) if row["type"] == CommandType.FETCH_LOGS else None
    return {**row, "events": [dict(e) for e in events], "logs": logs}


def list_for_node(
    conn: Connection, user: Principal, node_id: str, limit: int
) -> list[dict[str, Any]]:
    """The node's newest commands first, those the caller may see: a tenant's users see
    the ones issued while the node was their tenant's (a node moved between tenants
    leaves its history with the tenant it was recorded under), admins all."""
    rows = (
        conn.execute(
            text(
                "SELECT * FROM commands WHERE node_id = :node"
                " AND (:admin OR tenant_id = :tenant)"
                " ORDER BY issued_at DESC, id LIMIT :n"
            ),
            {"node": node_id, "admin": user.is_admin, "tenant": user.tenant_id, "n": limit},
        )
        .mappings()
        .all()
    )
    return [dict(r) for r in rows]
