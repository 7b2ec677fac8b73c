"""The API when its broker or its database goes away: nothing issued is lost, nothing
a node answered is lost."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.api_client import api_client
from tests.support.control_api import create_user, log_in
from tests.support.fake_node import CHARGE, FakeNode, command_state, online_node
from tests.support.fleet import create_tenant
from tests.support.proxy import CuttableProxy, proxy_for_database
from tests.support.services import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def database_proxy(database) -> Iterator[tuple[CuttableProxy, str]]:
    """A proxy in front of the shared database, and the URL that goes through it."""
    proxy, url = proxy_for_database(database.url)
    try:
        yield proxy, url
    finally:
        proxy.close()


def test_a_command_the_broker_did_not_confirm_is_published_again(database, broker):
    proxy = CuttableProxy(broker.port)
    try:
        with api_client(database, broker, mqtt_port=proxy.port, publish_timeout_s=1) as api:
            admin = log_in(api, create_user(database, "admin", None))
            tenant = create_tenant(database)
            # The node reaches the broker directly; only the API loses it.
            with online_node(api, admin, tenant, database, broker) as node:
                proxy.cut()
                wait_for(lambda: not api.app.state.link.connected.is_set(), 10, "API offline")  # type: ignore[attr-defined]
                response = api.post(
                    f"/nodes/{node.id}/commands", json=CHARGE, headers=admin.headers
                )
                assert response.status_code == 202
                assert response.json()["state"] == "pending"
                proxy.restore()
                done = command_state(api, admin, response.json()["id"], "sent", timeout=30)
                assert [e["state"] for e in done["events"]] == ["pending", "sent"]
                assert response.json()["id"] in {c["id"] for c in node.received()}
    finally:
        proxy.close()


def _ack_while_the_database_is_down(
    database, broker, database_proxy, meanwhile: Callable[[Any, FakeNode], None]
) -> None:
    """A node acks a sent command while the API's database is away; `meanwhile(link,
    node)` runs then. The ack is applied only once the database is back."""
    proxy, url = database_proxy
    with api_client(database, broker, database_url=url) as api:
        admin = log_in(api, create_user(database, "admin", None))
        with online_node(api, admin, create_tenant(database), database, broker) as node:
            command_id = api.post(
                f"/nodes/{node.id}/commands", json=CHARGE, headers=admin.headers
            ).json()["id"]
            node.received()
            proxy.cut()
            node.ack(command_id, "succeeded", "charging")
            meanwhile(api.app.state.link, node)  # type: ignore[attr-defined]
            with database.connect() as conn:
                state = conn.execute(
                    "SELECT state FROM commands WHERE id = %s", (command_id,)
                ).fetchone()[0]
            assert state == "sent"
            proxy.restore()
            done = command_state(api, admin, command_id, "succeeded", timeout=30)
            assert done["detail"] == "charging"


def test_an_ack_that_arrives_while_the_database_is_down_is_applied_when_it_returns(
    database, broker, database_proxy
):
    _ack_while_the_database_is_down(database, broker, database_proxy, lambda _link, _node: None)


def test_an_ack_that_cannot_be_stored_holds_up_neither_commands_nor_node_accounts(
    database, broker, database_proxy, caplog
):
    """The ack is retried on the ack worker's thread; paho's network thread keeps
    confirming command publishes and carrying dynamic-security answers meanwhile."""

    def meanwhile(link: Any, node: FakeNode) -> None:
        wait_for(
            lambda: [r for r in caplog.records if r.exc_info and node.id in r.getMessage()],
            20,
            "the ack's write to fail",
        )
        assert link.publish_command(node.id, json.dumps({"id": "probe"}))
        assert node.received(2)[1] == {"id": "probe"}
        answer = link.dynsec.run("getClient", username=node.id)
        assert answer["data"]["client"]["username"] == node.id

    _ack_while_the_database_is_down(database, broker, database_proxy, meanwhile)
