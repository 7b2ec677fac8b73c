"""Commands to a node: typed per command type (the shared whitelist), stored and
audited before they are published, idempotent under `Idempotency-Key`, and refused for
an offline node unless queued. Also node config (versioned, pushed as CONFIG_PUSH) and
agent updates (SELF_UPDATE)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from fastapi import APIRouter, Body, Header, HTTPException, Query, Request, status
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

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]
OFFLINE = (
    "node {} is {}: the command would wait at the broker until it reconnects; "
    "send it again with queue=true to do that"
)


def issue(
    request: Request,
    engine: DbEngine,
    settings: Settings,
    user: Principal,
    node: dict[str, Any],
    command_type: CommandType,
    params: dict[str, Any],
    queue: bool,
    idempotency_key: str | None,
    config: tuple[int, dict[str, Any]] | None = None,
) -> CommandAcceptedOut:
    """Stores and audits the command (committed), then signs and publishes it."""
    if idempotency_key:
        with engine.connect() as conn:
            earlier = commands.find_by_idempotency_key(conn, user.id, idempotency_key)
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
    with engine.connect() as conn:
        state = (
            conn.execute(
                text("SELECT state FROM node_status WHERE node_id = :id"), {"id": node["id"]}
            ).scalar()
            or "unknown"
        )
    if state != "online" and not queue:
        raise HTTPException(status.HTTP_409_CONFLICT, OFFLINE.format(node["id"], state))
    command = commands.new_command(
        node["id"],
        node["tenant_id"],
        command_type,
        params,
        timedelta(seconds=settings.command_ttl_s),
    )
    try:
        _store(request, engine, user, command, idempotency_key, queue, config)
    except IntegrityError as exc:
        # A concurrent request took the same Idempotency-Key or config version.
        raise HTTPException(
            status.HTTP_409_CONFLICT, "a concurrent request conflicted; retry"
        ) from exc
    request.app.state.metrics.commands.labels(command_type.value, "issued").inc()
    sent = request.app.state.dispatcher.publish(command.id)
    return CommandAcceptedOut(id=command.id, state="sent" if sent else "pending")


def _store(
    request: Request,
    engine: Engine,
    user: Principal,
    command: commands.NewCommand,
    idempotency_key: str | None,
    queue: bool,
    config: tuple[int, dict[str, Any]] | None,
) -> None:
    with engine.begin() as conn:
        commands.insert(conn, command, user.id, idempotency_key, queue)
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
                    "user": user.id,
                },
            )
        audit_change(
            conn,
            request,
            202,
            {
                "command_id": command.id,
                "type": command.type.value,
                "params": command.params,
                "queued": queue,
            },
        )


@router.post(
    "/nodes/{node_id}/commands",
    response_model=CommandAcceptedOut,
    status_code=202,
    responses={409: {"description": "node offline or disabled, or key reused"}},
)
def issue_command(
    request: Request,
    node_id: str,
    body: Annotated[CommandBody, Body()],
    user: OperatorUser,
    engine: DbEngine,
    settings: Settings,
    idempotency_key: IdempotencyKey = None,
    queue: Annotated[bool, Query(description="send even if the node is offline")] = False,
) -> CommandAcceptedOut:
    node = load_node(request, engine, user, node_id)
    command_type = CommandType(body.type)
    params = body.params.model_dump(mode="json")
    return issue(
        request, engine, settings, user, node, command_type, params, queue, idempotency_key
    )


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
    "/nodes/{node_id}/config",
    response_model=CommandAcceptedOut,
    status_code=202,
    responses={409: {"description": "node offline or disabled"}},
)
def put_config(
    request: Request,
    node_id: str,
    body: NodeConfigIn,
    user: OperatorUser,
    engine: DbEngine,
    settings: Settings,
    idempotency_key: IdempotencyKey = None,
    queue: bool = False,
) -> CommandAcceptedOut:
    """Validates against the agent's own settings model, stores the next version and
    pushes it as CONFIG_PUSH."""
    node = load_node(request, engine, user, node_id)
    try:
        config = validate_node_config(node_id, body.config)
    except NodeConfigError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    with engine.connect() as conn:
        version = conn.execute(
            text("SELECT coalesce(max(version), 0) + 1 FROM node_configs WHERE node_id = :id"),
            {"id": node_id},
        ).scalar_one()
    params = ConfigPushParams(config=config, version=version).model_dump(mode="json")
    return issue(
        request,
        engine,
        settings,
        user,
        node,
        CommandType.CONFIG_PUSH,
        params,
        queue,
        idempotency_key,
        config=(version, config),
    )


@router.post(
    "/nodes/{node_id}/update",
    response_model=CommandAcceptedOut,
    status_code=202,
    responses={409: {"description": "node offline or disabled"}},
)
def update_agent(
    request: Request,
    node_id: str,
    body: SelfUpdateParams,
    user: OperatorUser,
    engine: DbEngine,
    settings: Settings,
    idempotency_key: IdempotencyKey = None,
    queue: bool = False,
) -> CommandAcceptedOut:
    """Asks the agent to install `version` and restart (SELF_UPDATE)."""
    node = load_node(request, engine, user, node_id)
    params = body.model_dump(mode="json")
    return issue(
        request,
        engine,
        settings,
        user,
        node,
        CommandType.SELF_UPDATE,
        params,
        queue,
        idempotency_key,
    )
