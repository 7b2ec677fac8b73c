"""Liveness, readiness and Prometheus metrics (unauthenticated, not audited)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from control_api.deps import DbEngine

router = APIRouter(tags=["system"])


@router.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readiness",
    responses={503: {"description": "database or broker unreachable, or node acks stuck"}},
)
def readiness(request: Request, response: Response, engine: DbEngine) -> dict[str, bool]:
    """Ready when the database answers, the broker link is up and node acks flow (none
    is waiting to be stored again)."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        database = True
    except SQLAlchemyError:
        database = False
    link = request.app.state.link
    broker = link.connected.is_set()
    acks = not link.acks_stuck
    if not (database and broker and acks):
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return {"database": database, "broker": broker, "acks": acks}


@router.get("/metrics", response_class=Response)
def metrics(request: Request) -> Response:
    registry = request.app.state.metrics.registry
    request.app.state.metrics.broker_connected.set(request.app.state.link.connected.is_set())
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
