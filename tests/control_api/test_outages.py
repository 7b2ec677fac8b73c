"""The API when its broker or its database goes away: nothing issued is lost, nothing
a node answered is lost."""

from __future__ import annotations

import pytest

from tests.control_api.test_commands import CHARGE, FakeNode, command_state, set_state
from tests.support.api_client import api_client
from tests.support.control_api import create_user, log_in
from tests.support.fleet import create_tenant, unique
from tests.support.proxy import CuttableProxy
from tests.support.services import wait_for

pytestmark = pytest.mark.integration


def test_a_command_the_broker_did_not_confirm_is_published_again(database, broker):
    proxy = CuttableProxy(broker.port)
    try:
        with api_client(database, broker, mqtt_port=proxy.port, publish_timeout_s=1) as api:
            admin = log_in(api, create_user(database, "admin", None))
            credentials = api.post(
                "/nodes",
                json={"id": unique("node"), "tenant_id": create_tenant(database)},
                headers=admin.headers,
            ).json()
            set_state(database, credentials["node_id"], "online")
            # The node reaches the broker directly; only the API loses it.
            node = FakeNode(broker, credentials)
            try:
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
                node.close()
    finally:
        proxy.close()


def test_an_ack_that_arrives_while_the_database_is_down_is_applied_when_it_returns(
    database, broker
):
    db_port = int(database.url.rsplit(":", 1)[1].split("/")[0])
    proxy = CuttableProxy(db_port)
    url = database.url.replace(f":{db_port}/", f":{proxy.port}/")
    try:
        with api_client(database, broker, database_url=url) as api:
            admin = log_in(api, create_user(database, "admin", None))
            credentials = api.post(
                "/nodes",
                json={"id": unique("node"), "tenant_id": create_tenant(database)},
                headers=admin.headers,
            ).json()
            set_state(database, credentials["node_id"], "online")
            node = FakeNode(broker, credentials)
            try:
                command_id = api.post(
                    f"/nodes/{node.id}/commands", json=CHARGE, headers=admin.headers
                ).json()["id"]
                node.received()
                proxy.cut()
                node.ack(command_id, "succeeded", "charging")
                with database.connect() as conn:
                    state = conn.execute(
                        "SELECT state FROM commands WHERE id = %s", (command_id,)
                    ).fetchone()[0]
                assert state == "sent"
                proxy.restore()
                done = command_state(api, admin, command_id, "succeeded", timeout=30)
                assert done["detail"] == "charging"
            finally:
                node.close()
    finally:
        proxy.close()
