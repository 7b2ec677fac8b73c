"""Commands to a node: typed per command type (the shared whitelist), stored and
audited before they are published, idempotent under `Idempotency-Key`, and refused for
an offline node unless queued. Also node config (versioned, pushed as CONFIG_PUSH) and
agent updates (SELF_UPDATE). The rules are in control_api/commands.py."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from fastapi import APIRouter, Body, Depends, Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field, create_model

from contract.commands import PARAMS_BY_TYPE, CommandType, SafetyLockParams, SelfUpdateParams
from contract.site_control import LockReason
from control_api import commands, node_config, safety_lock, tunnels
from control_api.deps import (
    AdminUser,
    Attempted,
    Audited,
    CurrentUser,
    DbConn,
    Dispatcher,
    OperatorUser,
    ScopedNode,
    Settings,
    note_target,
)
from control_api.schemas import (
    CommandAcceptedOut,
    CommandDetailOut,
    CommandIdPath,
    CommandOut,
    ConfigPushOut,
    NodeConfigIn,
    NodeConfigOut,
    SafetyLockIn,
    SafetyLockOut,
    TunnelIn,
)

router = APIRouter(tags=["commands"])


class _CommandBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str
    params: BaseModel


def _body_model(command_type: CommandType, params_model: type[BaseModel]) -> type[_CommandBody]:
    literal: Any = Literal
    return create_model(
        f"{command_type.value.title().replace('_', '')}Command",
        __base__=_CommandBody,
        type=(literal[command_type.value], ...),
        params=(params_model, ...),
    )


# One body model per whitelisted type, generated from the shared whitelist so the API
# cannot drift from what nodes accept. CONFIG_PUSH goes through PUT /nodes/{id}/config,
# which validates and versions the config; the tunnel's through the admin's
# /nodes/{id}/tunnel and the lock's through /nodes/{id}/safety-lock, which name the
# requester themselves.
OWN_ROUTES = (
    CommandType.CONFIG_PUSH,
    CommandType.OPEN_TUNNEL,
    CommandType.CLOSE_TUNNEL,
    CommandType.SAFETY_LOCK,
)
if TYPE_CHECKING:
    CommandBody = _CommandBody
else:
    CommandBody = Annotated[
        Union[  # noqa: UP007
            tuple(_body_model(t, p) for t, p in PARAMS_BY_TYPE.items() if t not in OWN_ROUTES)
        ],
        Field(discriminator="type"),
    ]

ISSUED: dict[int | str, dict[str, Any]] = {
    409: {
        "description": "node offline or disabled, Idempotency-Key reused, or a control"
        " command for a safety-locked site"
    }
}


def command_sender(
    user: OperatorUser,
    node: ScopedNode,
    conn: DbConn,
    settings: Settings,
    dispatcher: Dispatcher,
    record: Audited,
    attempt: Attempted,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)] = None,
    queue: Annotated[bool, Query(description="send even if the node is offline")] = False,
) -> commands.Sender:
    return commands.Sender(
        conn,
        user,
        node,
        idempotency_key,
        queue,
        timedelta(seconds=settings.command_ttl_s),
        dispatcher,
        record,
        attempt,
    )


CommandSender = Annotated[commands.Sender, Depends(command_sender)]


@router.post(
    "/nodes/{node_id}/commands",
    response_model=CommandAcceptedOut,
    status_code=202,
    responses=ISSUED,
)
def issue_command(
    body: Annotated[CommandBody, Body()], sender: CommandSender
) -> CommandAcceptedOut:
    return commands.issue(sender, CommandType(body.type), body.params.model_dump(mode="json"))


@router.get("/nodes/{node_id}/commands", response_model=list[CommandOut])
def list_commands(
    node: ScopedNode,
    user: CurrentUser,
    conn: DbConn,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    return commands.list_for_node(conn, user, node.id, limit)


@router.get("/commands/{command_id}", response_model=CommandDetailOut)
def get_command(
    request: Request, command_id: CommandIdPath, user: CurrentUser, conn: DbConn
) -> Any:
    command = commands.visible(conn, user, command_id)
    note_target(request, tenant_id=command["tenant_id"], node_id=command["node_id"])
    return command


@router.get("/nodes/{node_id}/config", response_model=NodeConfigOut)
def get_config(node: ScopedNode, conn: DbConn) -> Any:
    """The config the node reports it runs, else the newest pushed to it (an agent that
    predates config reports); secrets never leave the node, so none are here."""
    return node_config.current(conn, node.id)


@router.put(
    "/nodes/{node_id}/config", response_model=ConfigPushOut, status_code=202, responses=ISSUED
)
def put_config(body: NodeConfigIn, sender: CommandSender) -> ConfigPushOut:
    """Replaces the whole config: keys left out take their defaults. Validates against
    the node config contract (the model the agent validates with too), stores the next
    version and pushes it as CONFIG_PUSH."""
    return commands.push_config(sender, body.config)


@router.patch(
    "/nodes/{node_id}/config",
    response_model=ConfigPushOut,
    status_code=202,
    responses={**ISSUED, 409: {"description": ISSUED[409]["description"] + ", or no config known"}},
)
def patch_config(body: NodeConfigIn, sender: CommandSender) -> ConfigPushOut:
    """Changes only the keys given: a JSON merge patch (RFC 7396; null puts a key back
    to its default) on the config the node reports it runs, validated and pushed whole
    like PUT."""
    return commands.patch_config(sender, body.config)


@router.post(
    "/nodes/{node_id}/tunnel",
    response_model=CommandAcceptedOut,
    status_code=202,
    responses={409: {"description": ISSUED[409]["description"] + ", or no bastion configured"}},
)
def open_tunnel(
    body: TunnelIn, _: AdminUser, sender: CommandSender, settings: Settings
) -> CommandAcceptedOut:
    """Admins only: asks the node to open a reverse SSH tunnel to the hub's bastion, for
    `duration_s` (default 30 minutes, at most 4 hours), listening there on
    `remote_port`; the reason and the admin are audited and shown on the node's status
    page. Its state: `tunnel_*` in GET /nodes/{id} (docs/control-api.md)."""
    return tunnels.open_tunnel(sender, settings, body)


@router.delete(
    "/nodes/{node_id}/tunnel", response_model=CommandAcceptedOut, status_code=202, responses=ISSUED
)
def close_tunnel(_: AdminUser, sender: CommandSender) -> CommandAcceptedOut:
    """Admins only: asks the node to close its tunnel now (CLOSE_TUNNEL)."""
    return tunnels.close_tunnel(sender)


@router.post(
    "/nodes/{node_id}/update", response_model=CommandAcceptedOut, status_code=202, responses=ISSUED
)
def update_agent(body: SelfUpdateParams, sender: CommandSender) -> CommandAcceptedOut:
    """Asks the agent to install `version` and restart (SELF_UPDATE)."""
    return commands.issue(sender, CommandType.SELF_UPDATE, body.model_dump(mode="json"))


@router.get("/nodes/{node_id}/safety-lock", response_model=SafetyLockOut)
def get_safety_lock(node: ScopedNode, conn: DbConn) -> SafetyLockOut:
    """The site's safety lock as the hub sees it (the site's report, or the hub's lock
    on its way), and its dynamic strategy as reported."""
    return safety_lock.view(conn, node.id)


def _set_lock(sender: commands.Sender, locked: bool, reason: str) -> CommandAcceptedOut:
    # Queued whatever the node's state: a lock waits in the broker for a node away.
    params = SafetyLockParams(locked=locked, requested_by=sender.user.email, reason=reason)
    return commands.issue(
        dataclasses.replace(sender, queue=True),
        CommandType.SAFETY_LOCK,
        params.model_dump(mode="json"),
    )


@router.put(
    "/nodes/{node_id}/safety-lock",
    response_model=CommandAcceptedOut,
    status_code=202,
    responses=ISSUED,
)
def lock_site(body: SafetyLockIn, _: AdminUser, sender: CommandSender) -> CommandAcceptedOut:
    """Admins only: locks the site (SAFETY_LOCK, audited with the admin and the reason):
    from now on the hub refuses control commands for it with 409, and the agent refuses
    any that reach it."""
    return _set_lock(sender, True, body.reason)


@router.delete(
    "/nodes/{node_id}/safety-lock",
    response_model=CommandAcceptedOut,
    status_code=202,
    responses=ISSUED,
)
def unlock_site(
    reason: Annotated[LockReason, Query(description="why the lock is lifted (audited)")],
    _: AdminUser,
    sender: CommandSender,
) -> CommandAcceptedOut:
    """Admins only: lifts the hub's lock. A lock the site holds itself stays: only the
    site lifts it (GET /nodes/{id}/safety-lock shows which holds)."""
    return _set_lock(sender, False, reason)
