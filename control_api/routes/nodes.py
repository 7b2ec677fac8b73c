"""Nodes: list and detail with live status (tenant-scoped), and the admin's enrollment,
credential rotation, disabling and moving.

Enrollment creates the node, then its broker account (dynamic security: a role that
lets it use only its own topics), then marks it enabled; if the broker step fails the
node row is removed again, so no half-enrolled node remains.
"""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

from control_api.broker_security import BrokerSecurityError, DynsecClient
from control_api.config import ApiSettings
from control_api.deps import AdminUser, CurrentUser, DbEngine, Settings, load_node, note_target
from control_api.request_audit import audit_change
from control_api.routes.tenants import require_tenant
from control_api.schemas import NodeCredentialsOut, NodeIn, NodeOut, NodePatch

router = APIRouter(prefix="/nodes", tags=["nodes"])

SELECT_NODES = """
SELECT n.id, n.tenant_id, n.display_name, n.enabled, n.created_at,
    coalesce(s.state, 'unknown') AS state, s.last_seen_at, s.agent_version, s.clock_drift_s
FROM nodes n LEFT JOIN node_status s ON s.node_id = n.id
"""
BROKER_DOWN = "the broker did not take the change; nothing was changed: {}"


def dynsec(request: Request) -> DynsecClient:
    link = request.app.state.link
    if not link.connected.is_set():
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "not connected to the broker")
    client: DynsecClient = link.dynsec
    return client


def node_out(engine: Engine, node_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(
            conn.execute(text(SELECT_NODES + " WHERE n.id = :id"), {"id": node_id}).mappings().one()
        )


def _credentials(
    settings: ApiSettings, node_id: str, password: str, secret: str
) -> NodeCredentialsOut:
    return NodeCredentialsOut(
        node_id=node_id,
        mqtt_host=settings.node_mqtt_host,
        mqtt_port=settings.node_mqtt_port,
        mqtt_username=node_id,
        mqtt_password=password,
        node_secret=secret,
    )


@router.get("", response_model=list[NodeOut])
def list_nodes(user: CurrentUser, engine: DbEngine) -> Any:
    with engine.connect() as conn:
        if user.is_admin:
            return conn.execute(text(SELECT_NODES + " ORDER BY n.id")).mappings().all()
        return (
            conn.execute(
                text(SELECT_NODES + " WHERE n.tenant_id = :t ORDER BY n.id"), {"t": user.tenant_id}
            )
            .mappings()
            .all()
        )


@router.post(
    "",
    response_model=NodeCredentialsOut,
    status_code=201,
    responses={409: {"description": "exists"}, 503: {"description": "broker unavailable"}},
)
def enroll_node(
    request: Request, body: NodeIn, _: AdminUser, engine: DbEngine, settings: Settings
) -> NodeCredentialsOut:
    """Creates the node and its broker account; the credentials are shown only here."""
    note_target(request, tenant_id=body.tenant_id, node_id=body.id)
    with engine.connect() as conn:
        require_tenant(conn, body.tenant_id)
    broker = dynsec(request)
    password, secret = secrets.token_urlsafe(24), secrets.token_hex(32)
    try:
        with engine.begin() as conn:
            # Disabled until the broker has its account.
            conn.execute(
                text(
                    "INSERT INTO nodes (id, tenant_id, display_name, enabled, command_secret)"
                    " VALUES (:id, :tenant, :name, false, :secret)"
                ),
                {
                    "id": body.id,
                    "tenant": body.tenant_id,
                    "name": body.display_name,
                    "secret": secret,
                },
            )
    except IntegrityError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, f"node {body.id!r} exists") from exc
    try:
        broker.add_node(body.id, password)
    except BrokerSecurityError as exc:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM nodes WHERE id = :id"), {"id": body.id})
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, BROKER_DOWN.format(exc)) from exc
    with engine.begin() as conn:
        conn.execute(text("UPDATE nodes SET enabled = true WHERE id = :id"), {"id": body.id})
        audit_change(conn, request, 201, body.model_dump())
    return _credentials(settings, body.id, password, secret)


@router.get("/{node_id}", response_model=NodeOut)
def get_node(request: Request, node_id: str, user: CurrentUser, engine: DbEngine) -> Any:
    load_node(request, engine, user, node_id)
    return node_out(engine, node_id)


@router.patch("/{node_id}", response_model=NodeOut)
def update_node(
    request: Request, node_id: str, body: NodePatch, user: AdminUser, engine: DbEngine
) -> Any:
    """Renames the node or moves it to another tenant (its history stays where it was
    recorded; new telemetry lands under the new tenant)."""
    load_node(request, engine, user, node_id)
    if body.tenant_id is not None:
        with engine.connect() as conn:
            require_tenant(conn, body.tenant_id)
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE nodes SET tenant_id = coalesce(:tenant, tenant_id),"
                " display_name = coalesce(:name, display_name) WHERE id = :id"
            ),
            {"tenant": body.tenant_id, "name": body.display_name, "id": node_id},
        )
        audit_change(conn, request, 200, body.model_dump(exclude_none=True))
    return node_out(engine, node_id)


@router.post(
    "/{node_id}/credentials",
    response_model=NodeCredentialsOut,
    responses={503: {"description": "broker unavailable"}},
)
def rotate_credentials(
    request: Request, node_id: str, user: AdminUser, engine: DbEngine, settings: Settings
) -> NodeCredentialsOut:
    """New broker password and command key; the node's open connection is dropped and
    commands signed from now on use the new key."""
    load_node(request, engine, user, node_id)
    broker = dynsec(request)
    password, secret = secrets.token_urlsafe(24), secrets.token_hex(32)
    try:
        broker.set_node_password(node_id, password)
    except BrokerSecurityError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, BROKER_DOWN.format(exc)) from exc
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE nodes SET command_secret = :secret, credentials_rotated_at = now()"
                " WHERE id = :id"
            ),
            {"secret": secret, "id": node_id},
        )
        audit_change(conn, request, 200, {})
    return _credentials(settings, node_id, password, secret)


def _set_enabled(request: Request, node_id: str, enabled: bool, engine: Engine) -> Any:
    broker = dynsec(request)
    try:
        if enabled:
            broker.enable_node(node_id)
        else:
            broker.disable_node(node_id)
    except BrokerSecurityError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, BROKER_DOWN.format(exc)) from exc
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE nodes SET enabled = :enabled WHERE id = :id"),
            {"enabled": enabled, "id": node_id},
        )
        audit_change(conn, request, 200, {"enabled": enabled})
    return node_out(engine, node_id)


@router.post("/{node_id}/disable", response_model=NodeOut, responses={503: {}})
def disable_node(request: Request, node_id: str, user: AdminUser, engine: DbEngine) -> Any:
    """Revokes the node's broker access at once (its connection is closed)."""
    load_node(request, engine, user, node_id)
    return _set_enabled(request, node_id, False, engine)


@router.post("/{node_id}/enable", response_model=NodeOut, responses={503: {}})
def enable_node(request: Request, node_id: str, user: AdminUser, engine: DbEngine) -> Any:
    load_node(request, engine, user, node_id)
    return _set_enabled(request, node_id, True, engine)
