"""The control API in-process for tests: FastAPI's TestClient with the app's real
lifespan (database, broker link, scheduled jobs)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.testclient import TestClient

from control_api.app import create_app
from control_api.config import ApiSettings
from tests.support.control_api import api_settings
from tests.support.services import Broker, Database, wait_for


@contextmanager
def api_client(db: Database, broker: Broker, **overrides: Any) -> Iterator[TestClient]:
    settings = ApiSettings(**api_settings(db, broker, **overrides))
    with TestClient(create_app(settings)) as client:
        wait_for(client.app.state.link.connected.is_set, 10, "API connected to the broker")  # type: ignore[attr-defined]
        yield client
