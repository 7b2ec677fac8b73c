"""Commands to a node: typed per command type (the shared whitelist), stored and
audited before they are published, idempotent under `Idempotency-Key`, and refused for
an offline node unless queued. Also node config (versioned, pushed as CONFIG_PUSH) and
agent updates (SELF_UPDATE)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from fastapi import APIRouter, Body, Depends, Header, HTTPException, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field, create_model
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

from contract.commands import (
    PARAMS_BY_TYPE,
    CommandType,
    ConfigPushParams,
    SelfUpdateParams,
)
from control_api import commands
from control_api.config import ApiSettings
from control_api.deps import (
    CurrentUser,
    DbEngine,
    OperatorUser,
    Principal,
    Settings,
    hidden,
    load_node,
)
from control_api.node_config import NodeConfigError, validate_node_config
from control_api.request_audit import audit_change
from control_api.schemas import (
    CommandAcceptedOut,
    CommandDetailOut,
    CommandOut,
    NodeConfigIn,
    NodeConfigOut,
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
# which validates and versions the config.
if TYPE_CHECKING:
    CommandBody = _CommandBody
else:
    CommandBody = Annotated[
        Union[  # noqa: UP007
            tuple(
                _body_model(t, p) for t, p in PARAMS_BY_TYPE.items() if t != CommandType.CONFIG_PUSH
            )
        ],
        Field(discriminator="type"),
    ]

OFFLINE = (
    "node {} is {}: the command would wait at the broker until it reconnects; "
    "send it again with queue=true to do that"
)
ISSUED: dict[int | str, dict[str, Any]] = {
    409: {"description": "node offline or disabled, or Idempotency-Key reused"}
}


@dataclass(frozen=True)
class Issuer:
    """Who sends a command to which node, and how (what every sending route shares)."""

    request: Request
    engine: Engine
    settings: ApiSettings
    user: Principal
    node: dict[str, Any]
    idempotency_key: str | None
    queue: bool


def issuer(
    request: Request,
    node_id: str,
    user: OperatorUser,
    engine: DbEngine,
    settings: Settings,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)] = None,
    queue: Annotated[bool, Query(description="send even if the node is offline")] = False,
) -> Issuer:
    node = load_node(request, engine, user, node_id)
    return Issuer(request, engine, settings, user, node, idempotency_key, queue)


CommandIssuer = Annotated[Issuer, Depends(issuer)]


def issue(
    ctx: Issuer,
    command_type: CommandType,
    params: dict[str, Any],
    config: tuple[int, dict[str, Any]] | None = None,
) -> CommandAcceptedOut:
    """Stores and audits the command (committed), then signs and publishes it."""
    node = ctx.node
    if ctx.idempotency_key:
        with ctx.engine.connect() as conn:
            earlier = commands.find_by_idempotency_key(conn, ctx.user.id, ctx.idempotency_key)
        if earlier is not None:
            if (
                earlier["node_id"] != node["id"]
                or earlier["type"] != command_type
                or earlier["params"] != params
            ):
                raise HTTPException(
                    status.HTTP_409_CONFLICT, "Idempotency-Key was used for a different command"
                )
            return CommandAcceptedOut(id=earlier["id"], state=earlier["state"])
    if not node["enabled"]:
        raise HTTPException(status.HTTP_409_CONFLICT, f"node {node['id']} is disabled")
    with ctx.engine.connect() as conn:
        state = (
            conn.execute(
                text("SELECT state FROM node_status WHERE node_id = :id"), {"id": node["id"]}
            ).scalar()
            or "unknown"
        )
    if state != "online" and not ctx.queue:
        raise HTTPException(status.HTTP_409_CONFLICT, OFFLINE.format(node["id"], state))
    command = commands.new_command(
        node["id"],
        node["tenant_id"],
        command_type,
        params,
        timedelta(seconds=ctx.settings.command_ttl_s),
    )
    try:
        _store(ctx, command, config)
    except IntegrityError as exc:
        # A concurrent request took the same Idempotency-Key or config version.
        raise HTTPException(
            status.HTTP_409_CONFLICT, "a concurrent request conflicted; retry"
        ) from exc
    app_state = ctx.request.app.state
    app_state.metrics.commands.labels(command_type.value, "issued").inc()
    sent = app_state.dispatcher.publish(command.id)
    return CommandAcceptedOut(id=command.id, state="sent" if sent else "pending")


def _store(
    ctx: Issuer, command: commands.NewCommand, config: tuple[int, dict[str, Any]] | None
) -> None:
    with ctx.engine.begin() as conn:
        commands.insert(conn, command, ctx.user.id, ctx.idempotency_key, ctx.queue)
        if config is not None:
            conn.execute(
                text(
                    "INSERT INTO node_configs (node_id, version, config, command_id, created_by)"
                    " VALUES (:node, :version, CAST(:config AS jsonb), :command, :user)"
                ),
                {
                    "node": command.node_id,
                    "version": config[0],
                    "config": json.dumps(config[1]),
                    "command": command.id,
                    "user": ctx.user.id,
                },
            )
        audit_change(
            conn,
            ctx.request,
            202,
            {
                "command_id": command.id,
                "type": command.type.value,
                "params": command.params,
                "queued": ctx.queue,
            },
        )


@router.post(
    "/nodes/{node_id}/commands",
    response_model=CommandAcceptedOut,
    status_code=202,
    responses=ISSUED,
)
def issue_command(body: Annotated[CommandBody, Body()], ctx: CommandIssuer) -> CommandAcceptedOut:
    return issue(ctx, CommandType(body.type), body.params.model_dump(mode="json"))


@router.get("/nodes/{node_id}/commands", response_model=list[CommandOut])
def list_commands(
    request: Request,
    node_id: str,
    user: CurrentUser,
    engine: DbEngine,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    load_node(request, engine, user, node_id)
    with engine.connect() as conn:
        return commands.list_for_node(conn, node_id, limit)


@router.get("/commands/{command_id}", response_model=CommandDetailOut)
def get_command(request: Request, command_id: str, user: CurrentUser, engine: DbEngine) -> Any:
    with engine.connect() as conn:
        command = commands.get(conn, command_id)
    if command is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "command not found")
    if not user.sees_tenant(command["tenant_id"]):
        raise hidden(request, "command")
    request.state.audit_tenant_id = command["tenant_id"]
    request.state.audit_node_id = command["node_id"]
    return command


@router.get("/nodes/{node_id}/config", response_model=NodeConfigOut)
def get_config(request: Request, node_id: str, user: CurrentUser, engine: DbEngine) -> Any:
    """The latest pushed config (secrets never leave the node, so none are here)."""
    load_node(request, engine, user, node_id)
    with engine.connect() as conn:
        row = (
            conn.execute(
                text(
                    "SELECT node_id, version, config, command_id, created_at FROM node_configs"
                    " WHERE node_id = :id ORDER BY version DESC LIMIT 1"
                ),
                {"id": node_id},
            )
            .mappings()
            .first()
        )
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no config has been pushed to this node")
    return row


@router.put(
    "/nodes/{node_id}/config", response_model=CommandAcceptedOut, status_code=202, responses=ISSUED
)
def put_config(body: NodeConfigIn, ctx: CommandIssuer) -> CommandAcceptedOut:
    """Validates against the agent's own settings model, stores the next version and
    pushes it as CONFIG_PUSH."""
    node_id = ctx.node["id"]
    try:
        config = validate_node_config(node_id, body.config)
    except NodeConfigError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    with ctx.engine.connect() as conn:
        version = conn.execute(
            text("SELECT coalesce(max(version), 0) + 1 FROM node_configs WHERE node_id = :id"),
            {"id": node_id},
        ).scalar_one()
    params = ConfigPushParams(config=config, version=version).model_dump(mode="json")
    return issue(ctx, CommandType.CONFIG_PUSH, params, config=(version, config))


@router.post(
    "/nodes/{node_id}/update", response_model=CommandAcceptedOut, status_code=202, responses=ISSUED
)
def update_agent(body: SelfUpdateParams, ctx: CommandIssuer) -> CommandAcceptedOut:
    """Asks the agent to install `version` and restart (SELF_UPDATE)."""
    return issue(ctx, CommandType.SELF_UPDATE, body.model_dump(mode="json"))
