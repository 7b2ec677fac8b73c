from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from tests.support.api_client import api_client
from tests.support.control_api import ApiProcess, User, create_user, log_in
from tests.support.fake_node import FakeNode, online_node
from tests.support.fleet import create_tenant

pytestmark = pytest.mark.integration


@dataclass
class Actors:
    admin: User
    operator_a: User
    viewer_a: User
    operator_b: User
    tenant_a: int
    tenant_b: int


@pytest.fixture
def api_process(database, broker, tmp_path) -> Iterator[ApiProcess]:
    """The control API as a real `python -m control_api` process (for tests that kill
    it, or need its HTTP port)."""
    api = ApiProcess(database, broker, tmp_path / "api.log").start()
    try:
        yield api
    finally:
        if api.proc.poll() is None:
            api.stop()


@pytest.fixture
def api(database, broker) -> Iterator[TestClient]:
    with api_client(database, broker) as client:
        yield client


@pytest.fixture
def actors(database, api) -> Actors:
    tenant_a, tenant_b = create_tenant(database), create_tenant(database)
    return Actors(
        admin=log_in(api, create_user(database, "admin", None)),
        operator_a=log_in(api, create_user(database, "operator", tenant_a)),
        viewer_a=log_in(api, create_user(database, "viewer", tenant_a)),
        operator_b=log_in(api, create_user(database, "operator", tenant_b)),
        tenant_a=tenant_a,
        tenant_b=tenant_b,
    )


@pytest.fixture
def node(api, actors, broker, database) -> Iterator[FakeNode]:
    """A node of tenant A, enrolled through the API, connected and online."""
    with online_node(api, actors.admin, actors.tenant_a, database, broker) as fake:
        yield fake


@pytest.fixture
def quiet_api(database, broker) -> Iterator[TestClient]:
    """An API whose scheduled jobs (command expiry, re-publishing) first run an hour from
    now: every connection checked out of its pool during a test is a request's."""
    with api_client(database, broker, command_check_interval_s=3600) as client:
        yield client
