"""The FastAPI application and the resources it owns for its lifetime: the database
engine, the broker link, the command dispatcher and its scheduled jobs."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import DataError

from contract.commands import CommandType
from contract.text import storable_json
from control_api.api_docs import OPENAPI_URL, add_docs
from control_api.broker_link import BrokerLink
from control_api.config import ApiSettings
from control_api.config_intake import ConfigIntake
from control_api.dispatcher import CommandDispatcher
from control_api.errors import (
    ConflictError,
    InvalidError,
    NotFoundError,
    NotVisibleError,
    RateLimitedError,
    RefusedError,
    UnavailableError,
    WrongCredentialsError,
)
from control_api.grafana_sync import GrafanaSyncError, TenantSync
from control_api.log_intake import LogIntake
from control_api.login_limits import LoginLimits
from control_api.metrics import ApiMetrics
from control_api.request_audit import AuditMiddleware
from control_api.routes import audit, auth, commands, nodes, system, tariffs, tenants, users
from control_api.schemas import ERROR_RESPONSES
from control_api.site_push import SitePusher
from timescale.database import sqlalchemy_url

log = logging.getLogger(__name__)

# The answer to each refusal of the rules (control_api/errors.py), most specific first.
REFUSED_STATUS: list[tuple[type[RefusedError], int]] = [
    (WrongCredentialsError, 401),
    (NotFoundError, 404),
    (ConflictError, 409),
    (InvalidError, 422),
    (RateLimitedError, 429),
    (UnavailableError, 503),
    (RefusedError, 400),
]


def error_response(
    detail: Any, status_code: int, headers: dict[str, str] | None = None
) -> JSONResponse:
    """Every error answer: `{"detail": ...}`, with any NUL or lone surrogate a refused
    request carried replaced, so the answer itself can always be encoded."""
    return JSONResponse({"detail": storable_json(detail)}, status_code=status_code, headers=headers)


# The longest reason an error answer carries: pydantic's and the database's messages may
# quote what they refused.
MAX_REASON_CHARS = 300


def _reason(error: Any) -> str:
    if error["type"] == "union_tag_invalid":
        # pydantic's message quotes the tag it refused, whatever its size.
        ctx = error.get("ctx") or {}
        return f"{ctx.get('discriminator', 'the tag')} must be one of {ctx.get('expected_tags')}"
    return str(error["msg"])[:MAX_REASON_CHARS]


def validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    """What was invalid, where, and why; never the input itself, which may be a password,
    or a value (NaN, a lone surrogate) that JSON or UTF-8 cannot carry back."""
    return [{"type": e["type"], "loc": list(e["loc"]), "msg": _reason(e)} for e in exc.errors()]


def make_engine(settings: ApiSettings) -> Engine:
    return create_engine(
        sqlalchemy_url(settings.database_url),
        pool_pre_ping=True,
        connect_args={"prepare_threshold": settings.prepare_threshold},
    )


def create_app(settings: ApiSettings) -> FastAPI:
    engine = make_engine(settings)
    metrics = ApiMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The hub's own pushes of site settings, to nodes whose report lacks them.
        hub_pusher = SitePusher(
            timedelta(seconds=settings.command_ttl_s),
            lambda conn, command_id: dispatcher.publish_new(
                conn, command_id, CommandType.CONFIG_PUSH
            ),
        )
        # Acks only arrive after link.start(), by which time the dispatcher exists.
        link = BrokerLink(
            settings,
            lambda node, payload: dispatcher.handle_ack(node, payload),
            settings.publish_timeout_s,
            metrics.acks_dropped_total.labels("refused").inc,
            on_logs=LogIntake(engine, metrics).handle_chunk,
            on_logs_dropped=metrics.log_chunks_dropped_total.labels("refused").inc,
            on_config=ConfigIntake(engine, metrics, hub_pusher).handle_report,
            on_config_dropped=metrics.config_reports_dropped_total.labels("refused").inc,
        )
        dispatcher = CommandDispatcher(
            engine,
            link,
            metrics,
            result_grace=timedelta(seconds=settings.command_result_grace_s),
            republish_after=timedelta(seconds=settings.command_republish_after_s),
        )
        scheduler = BackgroundScheduler(timezone="UTC")
        for job in (dispatcher.expire_overdue, dispatcher.republish_pending):
            scheduler.add_job(
                job,
                "interval",
                seconds=settings.command_check_interval_s,
                max_instances=1,
                coalesce=True,
            )
        target = settings.grafana_target()
        if target is not None:
            sync = TenantSync(engine, target)

            def run_sync(only_tenant: int | None = None, password: str | None = None) -> None:
                try:
                    sync.run(only_tenant, password)
                except GrafanaSyncError as exc:
                    metrics.grafana_syncs_total.labels("failed").inc()
                    log.error("grafana tenant sync failed (next run retries): %s", exc)
                    return
                metrics.grafana_syncs_total.labels("ok").inc()

            scheduler.add_job(
                run_sync,
                "interval",
                seconds=settings.grafana_sync_interval_s,
                max_instances=1,
                coalesce=True,
                next_run_time=datetime.now(UTC),
            )
            app.state.sync_tenant = lambda tenant_id, password: scheduler.add_job(
                run_sync, kwargs={"only_tenant": tenant_id, "password": password}
            )
        app.state.link = link
        app.state.dispatcher = dispatcher
        link.start()
        scheduler.start()
        try:
            yield
        finally:
            scheduler.shutdown(wait=True)
            link.stop()
            engine.dispose()

    app = FastAPI(
        title="wattfleet control API",
        version="0.1.0",
        lifespan=lifespan,
        max_body_size=settings.api_max_body_bytes,
        description="Tenants, users, node enrollment, audited signed commands, node config.",
        openapi_url=OPENAPI_URL,
        # Served by add_docs from the API's own assets, not a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    # Replaced in the lifespan when a Grafana URL is set.
    app.state.sync_tenant = lambda _tenant_id, _password: None
    app.state.engine = engine
    app.state.metrics = metrics
    app.state.login_limits = LoginLimits(
        settings.login_limit_per_account, settings.login_limit_per_address
    )
    app.add_middleware(
        AuditMiddleware,
        engine=engine,
        metrics=metrics,
        audit_reads=settings.api_audit_reads,
        jwt_secret=settings.jwt_secret.get_secret_value(),
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
    )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_errors(exc), 422)

    @app.exception_handler(DataError)
    async def data_error(_request: Request, exc: DataError) -> JSONResponse:
        # Input the database cannot hold that validation let through (a number out of
        # range): still the caller's mistake, never a server error.
        # The primary message only: not its CONTEXT (our functions' internals).
        diag = getattr(exc.orig, "diag", None)
        message = getattr(diag, "message_primary", None) or "out of range"
        return error_response(f"invalid value: {message[:MAX_REASON_CHARS]}", 422)

    @app.exception_handler(RefusedError)
    async def refused(request: Request, exc: RefusedError) -> JSONResponse:
        if isinstance(exc, NotVisibleError):
            request.state.denied = True
        headers = (
            {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, RateLimitedError) else None
        )
        status_code = next(code for kind, code in REFUSED_STATUS if isinstance(exc, kind))
        return error_response(str(exc), status_code, headers)

    add_docs(app)
    app.include_router(system.router)
    for module in (auth, tenants, users, nodes, commands, tariffs, audit):
        app.include_router(module.router, responses=ERROR_RESPONSES)
    return app
