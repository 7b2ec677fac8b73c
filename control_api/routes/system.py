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


@router.get("/readiness", responses={503: {"description": "database or broker unreachable"}})
def readiness(request: Request, response: Response, engine: DbEngine) -> dict[str, bool]:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        database = True
    except SQLAlchemyError:
        database = False
    broker = request.app.state.link.connected.is_set()
    if not (database and broker):
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return {"database": database, "broker": broker}


@router.get("/metrics", response_class=Response)
def metrics(request: Request) -> Response:
    registry = request.app.state.metrics.registry
    request.app.state.metrics.broker_connected.set(request.app.state.link.connected.is_set())
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
