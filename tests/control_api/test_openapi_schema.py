"""schemathesis against the API's own /openapi.json, as an authenticated admin: no
server errors, and every answer (status, content type, body) matches the schema."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.control_api import ApiProcess, User, create_user, log_in

pytestmark = pytest.mark.integration

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def running(database, broker, tmp_path) -> Iterator[tuple[ApiProcess, User]]:
    api = ApiProcess(database, broker, tmp_path / "api.log").start()
    try:
        with api.client() as client:
            yield api, log_in(client, create_user(database, "admin", None))
    finally:
        api.stop()


def test_api_conforms_to_its_schema(running):
    api, admin = running
    schema = schemathesis.openapi.from_url(api.url + "/openapi.json")
    failures = []
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) == 33  # every route, so a new one is not left untested
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case):
            case.call_and_validate(base_url=api.url, headers=admin.headers, checks=CHECKS)

        try:
            check()
        except Exception as exc:  # collect every operation's failure, then report all
            failures.append(f"{operation.label}: {exc}")
    assert failures == []
