"""One database connection per request: the caller's lookup, the node scoping, the
route's rule, the dispatcher's publish and the request's audit row share it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Engine, event

from tests.support.control_api import create_user, log_in
from tests.support.fake_node import CHARGE, online_node
from tests.support.fleet import create_tenant

pytestmark = pytest.mark.integration


@contextmanager
def pool_traffic(engine: Engine) -> Iterator[dict[str, int]]:
    counts = {"checkout": 0, "checkin": 0}

    def checkout(*_: object) -> None:
        counts["checkout"] += 1

    def checkin(*_: object) -> None:
        counts["checkin"] += 1

    event.listen(engine, "checkout", checkout)
    event.listen(engine, "checkin", checkin)
    try:
        yield counts
    finally:
        event.remove(engine, "checkout", checkout)
        event.remove(engine, "checkin", checkin)


def test_a_read_a_change_and_a_command_each_check_out_one_connection(quiet_api, database, broker):
    api = quiet_api
    admin = log_in(api, create_user(database, "admin", None))
    with online_node(api, admin, create_tenant(database), database, broker) as node:
        requests: list[tuple[str, str, dict[str, Any], int]] = [
            ("GET", f"/nodes/{node.id}", {}, 200),
            ("PATCH", f"/nodes/{node.id}", {"json": {"display_name": "Garage"}}, 200),
            ("POST", f"/nodes/{node.id}/commands", {"json": CHARGE}, 202),
            # Refused: the audit row is written by the middleware, on the same connection.
            ("GET", "/nodes/no-such-node", {}, 404),
        ]
        for method, path, kwargs, status in requests:
            with pool_traffic(api.app.state.engine) as counts:
                response = api.request(method, path, headers=admin.headers, **kwargs)
            assert response.status_code == status, response.text
            # Returned to the pool before the answer, too.
            assert counts == {"checkout": 1, "checkin": 1}, (method, path)
        assert node.received()[0]["type"] == "FORCE_CHARGE"
