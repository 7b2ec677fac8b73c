"""Nodes: list and detail with live status (tenant-scoped), the logs they sent for
FETCH_LOGS, and the admin's enrollment, credential rotation, disabling and moving. The
rules are in control_api/nodes.py and control_api/node_logs.py."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from control_api import node_logs, nodes
from control_api.config import ApiSettings
from control_api.deps import (
    AdminUser,
    Audited,
    CurrentUser,
    DbConn,
    Link,
    ScopedNode,
    Settings,
    SitePushes,
    note_target,
)
from control_api.schemas import (
    CommandIdQuery,
    InventoryFilterQuery,
    LogChunkQuery,
    LogLimitQuery,
    NodeChangeOut,
    NodeCredentialsOut,
    NodeIn,
    NodeLogsOut,
    NodeOut,
    NodePatch,
)

router = APIRouter(prefix="/nodes", tags=["nodes"])


def _credentials_out(
    settings: ApiSettings, node_id: str, credentials: nodes.Credentials
) -> NodeCredentialsOut:
    return NodeCredentialsOut(
        node_id=node_id,
        mqtt_host=settings.node_mqtt_host,
        mqtt_port=settings.node_mqtt_port,
        mqtt_username=node_id,
        mqtt_password=credentials.mqtt_password,
        node_secret=credentials.node_secret,
    )


@router.get("", response_model=list[NodeOut])
def list_nodes(
    user: CurrentUser,
    conn: DbConn,
    model: InventoryFilterQuery | None = None,
    firmware: InventoryFilterQuery | None = None,
) -> Any:
    """The nodes the caller may see, with live status and inventory. `model` and
    `firmware` keep those whose inverter reports that model or firmware version: the
    exact value, or a prefix when it ends in `*` (`firmware=1.2*`)."""
    return nodes.list_visible(conn, user, nodes.InventoryFilter(model, firmware))


@router.post(
    "",
    response_model=NodeCredentialsOut,
    status_code=201,
    responses={
        409: {"description": "exists, or its broker account is not a node's"},
        422: {"description": "unknown tenant, or a node id the hub's accounts use"},
        503: {"description": "broker unavailable"},
    },
)
def enroll_node(
    request: Request,
    body: NodeIn,
    _: AdminUser,
    conn: DbConn,
    link: Link,
    settings: Settings,
    record: Audited,
) -> NodeCredentialsOut:
    """Creates the node and its broker account; the credentials are shown only here.
    Its site's zone and tariffs reach it with its first config report (it reports at
    each connect): the hub pushes them then."""
    note_target(request, tenant_id=body.tenant_id, node_id=body.id)
    credentials = nodes.enroll(conn, link, body, record)
    return _credentials_out(settings, body.id, credentials)


@router.get("/{node_id}", response_model=NodeOut)
def get_node(node: ScopedNode, conn: DbConn) -> Any:
    return nodes.detail(conn, node.id)


@router.get("/{node_id}/logs", response_model=NodeLogsOut)
def get_node_logs(
    node: ScopedNode,
    user: CurrentUser,
    conn: DbConn,
    command_id: CommandIdQuery,
    from_chunk: LogChunkQuery = 0,
    limit: LogLimitQuery = 20,
) -> Any:
    """The log lines the node sent in answer to its FETCH_LOGS command `command_id`,
    chunk by chunk in order, `limit` chunks a page (200 lines each at most)."""
    return node_logs.read(conn, user, node.id, command_id, from_chunk, limit)


@router.patch("/{node_id}", response_model=NodeChangeOut)
def update_node(
    body: NodePatch,
    _: AdminUser,
    node: ScopedNode,
    conn: DbConn,
    record: Audited,
    pusher: SitePushes,
) -> Any:
    """Renames the node, moves it to another tenant (its history stays where it was
    recorded; new telemetry lands under the new tenant) or sets its site's time zone
    (null: the tenant's). A move or a zone is pushed to the node (`config_pushes`)."""
    return nodes.update(conn, node.id, body, record, pusher)


@router.post(
    "/{node_id}/credentials",
    response_model=NodeCredentialsOut,
    responses={
        409: {"description": "its broker account is not a node's"},
        503: {"description": "broker unavailable"},
    },
)
def rotate_credentials(
    _: AdminUser, node: ScopedNode, conn: DbConn, link: Link, settings: Settings, record: Audited
) -> NodeCredentialsOut:
    """New broker password and command key; the node's open connection is dropped and
    commands signed from now on use the new key."""
    credentials = nodes.rotate_credentials(conn, link, node.id, record)
    return _credentials_out(settings, node.id, credentials)


@router.post("/{node_id}/disable", response_model=NodeOut, responses={503: {}})
def disable_node(_: AdminUser, node: ScopedNode, conn: DbConn, link: Link, record: Audited) -> Any:
    """Revokes the node's broker access at once (its connection is closed)."""
    return nodes.set_enabled(conn, link, node.id, False, record)


@router.post("/{node_id}/enable", response_model=NodeOut, responses={503: {}})
def enable_node(_: AdminUser, node: ScopedNode, conn: DbConn, link: Link, record: Audited) -> Any:
    return nodes.set_enabled(conn, link, node.id, True, record)
