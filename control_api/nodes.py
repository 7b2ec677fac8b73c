"""Nodes: list and detail with live status (tenant-scoped), and the admin's enrollment,
credential rotation, disabling and moving.

Enrollment creates the node, then its broker account (dynamic security: a role that
lets it use only its own topics, and only under client id = node id), then marks it
enabled; if the broker step fails the node row is removed again, so no half-enrolled
node remains. A node id the hub's own accounts or client ids use is refused, and no
broker step ever changes an account that is not a node's (it answers 409).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError

from control_api import site_settings, tenants
from control_api.audit import RecordChange
from control_api.auth import Principal
from control_api.broker_link import BrokerLink
from control_api.broker_security import (
    BrokerSecurityError,
    DynsecClient,
    NotANodeAccountError,
    reserved_node_id,
)
from control_api.errors import (
    ConflictError,
    InvalidError,
    NotFoundError,
    NotVisibleError,
    UnavailableError,
)
from control_api.schemas import NodeIn, NodePatch

if TYPE_CHECKING:  # site_push issues commands, whose rules import ours
    from control_api.site_push import SitePusher

SELECT_NODES = """
SELECT n.id, n.tenant_id, n.display_name, n.timezone,
    coalesce(n.timezone, t.timezone) AS effective_timezone, n.enabled, n.created_at,
    coalesce(s.state, 'unknown') AS state, s.last_seen_at, s.agent_version, s.clock_drift_s,
    s.tunnel_state, s.tunnel_until, s.tunnel_remote_port, s.tunnel_detail, s.tunnel_public_key,
    s.safety_locked, s.safety_lock_source, s.safety_lock_reason, s.strategy_enabled, s.strategy,
    CASE WHEN i.node_id IS NOT NULL THEN i.inventory || jsonb_build_object(
        'reported_at', i.reported_at, 'received_at', i.received_at) END AS inventory
FROM nodes n JOIN tenants t ON t.id = n.tenant_id LEFT JOIN node_status s ON s.node_id = n.id
LEFT JOIN node_inventory i ON i.node_id = n.id
"""
BROKER_DOWN = "the broker did not take the change; nothing was changed: {}"
RESERVED = "node id {!r} is reserved: the hub's own broker accounts and client ids use it"


@dataclass(frozen=True)
class Node:
    id: str
    tenant_id: int
    display_name: str
    enabled: bool


@dataclass(frozen=True)
class Credentials:
    """A node's broker password and command key, shown once."""

    mqtt_password: str
    node_secret: str


def _new_credentials() -> Credentials:
    return Credentials(secrets.token_urlsafe(24), secrets.token_hex(32))


def _broker(link: BrokerLink) -> DynsecClient:
    if not link.connected.is_set():
        raise UnavailableError("not connected to the broker")
    client: DynsecClient = link.dynsec
    return client


def _end_reads(conn: Connection) -> None:
    """Ends the request's reads' transaction, so none stays open while the broker is
    waited on (the change comes after, in a transaction of its own)."""
    conn.rollback()


def visible(conn: Connection, user: Principal, node_id: str) -> Node:
    """The node if the caller may see it; NotFoundError or NotVisibleError otherwise."""
    row = conn.execute(
        text("SELECT id, tenant_id, display_name, enabled FROM nodes WHERE id = :id"),
        {"id": node_id},
    ).first()
    if row is None:
        raise NotFoundError("node not found")
    node = Node(*row)
    if not user.sees_tenant(node.tenant_id):
        raise NotVisibleError("node")
    return node


def detail(conn: Connection, node_id: str) -> dict[str, Any]:
    """The node with its live status (an existing node)."""
    return dict(
        conn.execute(text(SELECT_NODES + " WHERE n.id = :id"), {"id": node_id}).mappings().one()
    )


@dataclass(frozen=True)
class InventoryFilter:
    """GET /nodes?model=&firmware=: each an exact value, or a prefix when it ends in `*`
    (validated where the request enters: control_api/schemas.py)."""

    model: str | None = None
    firmware: str | None = None

    def where(self) -> tuple[list[str], dict[str, Any]]:
        """SQL conditions on the inventory (alias `i`) and their parameters."""
        conditions: list[str] = []
        params: dict[str, Any] = {}
        for column, value in (("model", self.model), ("firmware", self.firmware)):
            if value is None:
                continue
            if value.endswith("*"):
                conditions.append(f"i.{column} LIKE :{column} ESCAPE '\\'")
                params[column] = _like_escaped(value[:-1]) + "%"
            else:
                conditions.append(f"i.{column} = :{column}")
                params[column] = value
        return conditions, params


def _like_escaped(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def list_visible(
    conn: Connection, user: Principal, inventory: InventoryFilter | None = None
) -> list[dict[str, Any]]:
    """Every node for an admin, the user's tenant's otherwise, with live status and
    inventory; only those whose inventory matches `inventory`, if given."""
    conditions, params = (inventory or InventoryFilter()).where()
    if not user.is_admin:
        conditions.append("n.tenant_id = :t")
        params["t"] = user.tenant_id
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    result = conn.execute(text(SELECT_NODES + where + " ORDER BY n.id"), params)
    return [dict(r) for r in result.mappings()]


def _broker_refused(exc: BrokerSecurityError) -> ConflictError | UnavailableError:
    """ConflictError when the account is not a node's, UnavailableError otherwise."""
    if isinstance(exc, NotANodeAccountError):
        return ConflictError(str(exc))
    return UnavailableError(BROKER_DOWN.format(exc))


def enroll(conn: Connection, link: BrokerLink, body: NodeIn, record: RecordChange) -> Credentials:
    """Creates the node and its broker account. InvalidError for an unknown tenant or a
    reserved id, ConflictError when the node exists or its broker account is not a
    node's, UnavailableError (and no node) when the broker does not take the account."""
    if reserved_node_id(body.id):
        raise InvalidError(RESERVED.format(body.id))
    tenants.require(conn, body.tenant_id)
    broker = _broker(link)
    credentials = _new_credentials()
    try:
        # Disabled until the broker has its account.
        conn.execute(
            text(
                "INSERT INTO nodes (id, tenant_id, display_name, timezone, enabled,"
                " command_secret) VALUES (:id, :tenant, :name, :timezone, false, :secret)"
            ),
            {
                "id": body.id,
                "tenant": body.tenant_id,
                "name": body.display_name,
                "timezone": body.timezone,
                "secret": credentials.node_secret,
            },
        )
        conn.commit()
    except IntegrityError as exc:
        conn.rollback()
        raise ConflictError(f"node {body.id!r} exists") from exc
    try:
        broker.add_node(body.id, credentials.mqtt_password)
    except BrokerSecurityError as exc:
        conn.execute(text("DELETE FROM nodes WHERE id = :id"), {"id": body.id})
        conn.commit()
        raise _broker_refused(exc) from exc
    conn.execute(text("UPDATE nodes SET enabled = true WHERE id = :id"), {"id": body.id})
    record(conn, body.model_dump())
    conn.commit()
    return credentials


def update(
    conn: Connection, node_id: str, body: NodePatch, record: RecordChange, pusher: SitePusher
) -> dict[str, Any]:
    """Renames the node, moves it to another tenant (its history stays where it was
    recorded; new telemetry lands under the new tenant; its own tariff versions go with
    it) or sets its zone (`timezone` given as null: its tenant's again). A move or a new
    zone is pushed to the node (control_api/site_push.py)."""
    if body.tenant_id is not None:
        tenants.require(conn, body.tenant_id)
    zone_given = "timezone" in body.model_fields_set
    conn.execute(
        text(
            "UPDATE nodes SET tenant_id = coalesce(:tenant, tenant_id),"
            " display_name = coalesce(:name, display_name),"
            " timezone = CASE WHEN :zone_given THEN :timezone ELSE timezone END"
            " WHERE id = :id"
        ),
        {
            "tenant": body.tenant_id,
            "name": body.display_name,
            "zone_given": zone_given,
            "timezone": body.timezone,
            "id": node_id,
        },
    )
    if body.tenant_id is not None:
        conn.execute(
            text("UPDATE tariffs SET tenant_id = :tenant WHERE node_id = :id"),
            {"tenant": body.tenant_id, "id": node_id},
        )
    concerned = zone_given or body.tenant_id is not None
    pushes = pusher.stage(conn, [site_settings.site(conn, node_id)] if concerned else [])
    changes = body.model_dump(exclude_unset=True)
    record(conn, {**changes, "config_pushes": pushes.audit()})
    conn.commit()
    published = pusher.publish(conn, pushes)
    return {**detail(conn, node_id), "config_pushes": published.out()}


def rotate_credentials(
    conn: Connection, link: BrokerLink, node_id: str, record: RecordChange
) -> Credentials:
    """New broker password and command key: the broker drops the node's open
    connection, and commands signed from now on use the new key."""
    broker = _broker(link)
    credentials = _new_credentials()
    _end_reads(conn)
    try:
        broker.set_node_password(node_id, credentials.mqtt_password)
    except BrokerSecurityError as exc:
        raise _broker_refused(exc) from exc
    conn.execute(
        text(
            "UPDATE nodes SET command_secret = :secret, credentials_rotated_at = now()"
            " WHERE id = :id"
        ),
        {"secret": credentials.node_secret, "id": node_id},
    )
    record(conn, {})
    conn.commit()
    return credentials


def set_enabled(
    conn: Connection, link: BrokerLink, node_id: str, enabled: bool, record: RecordChange
) -> dict[str, Any]:
    """Grants or revokes the node's broker access (a disabled node is disconnected at
    once); the node with its live status."""
    broker = _broker(link)
    _end_reads(conn)
    try:
        if enabled:
            broker.enable_node(node_id)
        else:
            broker.disable_node(node_id)
    except BrokerSecurityError as exc:
        raise _broker_refused(exc) from exc
    conn.execute(
        text("UPDATE nodes SET enabled = :enabled WHERE id = :id"),
        {"enabled": enabled, "id": node_id},
    )
    record(conn, {"enabled": enabled})
    conn.commit()
    return detail(conn, node_id)
