"""Broker accounts against a compromised node or a careless enrolment, on a real
Mosquitto (dynamic security): no node id can be a hub service account, enrolment and
rotation never change an account that is not a node's, and a node account works only
under its own client id, so it cannot take over another client's connection."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from contract import topics
from control_api.broker_security import NotANodeAccountError
from tests.support.api_client import api_client
from tests.support.control_api import User, create_user, log_in
from tests.support.fleet import count_rows, create_tenant, dynsec, mqtt_client, unique
from tests.support.services import Broker, Database, wait_for

pytestmark = pytest.mark.integration
NODE_ROWS = "SELECT count(*) FROM nodes WHERE id = %s"


@pytest.fixture
def api(database: Database, broker: Broker) -> Iterator[TestClient]:
    with api_client(database, broker) as client:
        yield client


@pytest.fixture
def admin(api: TestClient, database: Database) -> User:
    return log_in(api, create_user(database, "admin", None))


def enroll(api: TestClient, admin: User, tenant: int, node_id: str) -> Any:
    return api.post("/nodes", json={"id": node_id, "tenant_id": tenant}, headers=admin.headers)


def logs_in(broker: Broker, username: str, password: str) -> bool:
    try:
        client = mqtt_client(broker, username, password)
    except ConnectionRefusedError:
        return False
    client.disconnect()
    client.loop_stop()
    return True


@pytest.mark.parametrize(
    "node_id", ["admin", "collector", "control-api", "dynsec-admin", "collector-1", "Control-API-2"]
)
def test_no_node_can_be_enrolled_as_a_hub_account(api, admin, database, broker, node_id):
    response = enroll(api, admin, create_tenant(database), node_id)
    assert response.status_code == 422, response.text
    assert response.json() == {
        "detail": f"node id {node_id!r} is reserved: the hub's own broker accounts and client"
        " ids use it"
    }
    assert count_rows(database, NODE_ROWS, (node_id,)) == 0
    for service, password in broker.passwords.items():
        assert logs_in(broker, service, password), f"{service} lost its password"


def test_enrolment_and_rotation_never_change_an_account_that_is_not_a_nodes(
    api, admin, database, broker
):
    """An account an operator made by hand (a bridge, say) under a name no rule
    reserves: enrolling a node of that name is refused and leaves it as it was; nor do
    the broker steps of rotation, disabling and enabling touch the service accounts."""
    bridge = unique("bridge")
    with dynsec(broker) as dynsec_admin:
        dynsec_admin.run(
            "createClient",
            username=bridge,
            password="bridge-password",
            roles=[{"rolename": "collector"}],
        )
        response = enroll(api, admin, create_tenant(database), bridge)
        assert response.status_code == 409, response.text
        assert response.json()["detail"].startswith(f"broker account {bridge!r} is not a node's")
        assert count_rows(database, NODE_ROWS, (bridge,)) == 0
        assert logs_in(broker, bridge, "bridge-password")
        for change in (
            lambda name: dynsec_admin.set_node_password(name, "stolen-password"),
            dynsec_admin.disable_node,
            dynsec_admin.enable_node,
        ):
            for name in ("admin", "collector", "control-api", bridge):
                with pytest.raises(NotANodeAccountError):
                    change(name)
    for service, password in broker.passwords.items():
        assert logs_in(broker, service, password), f"{service} lost its password"
    assert not logs_in(broker, "collector", "stolen-password")


class Connected:
    """A client connected under `client_id`, recording whether the broker drops it."""

    def __init__(self, broker: Broker, username: str, password: str, client_id: str) -> None:
        self.dropped = threading.Event()
        self.client = mqtt_client(broker, username, password, client_id=client_id)
        self.client.on_disconnect = lambda *_: self.dropped.set()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_a_node_account_works_only_under_its_own_client_id(api, admin, database, broker):
    """A node that connects under another client's id would take over its connection
    (Mosquitto drops the owner). The broker refuses such a connect, and the owner stays."""
    tenant = create_tenant(database)
    victim, thief = (enroll(api, admin, tenant, unique("node")).json() for _ in range(2))
    owner = Connected(broker, victim["node_id"], victim["mqtt_password"], victim["node_id"])
    collector = Connected(broker, "collector", broker.passwords["collector"], "collector-1")
    link = api.app.state.link
    generation = link.link.generation
    try:
        for foreign in (victim["node_id"], "collector-1", link.link.settings.mqtt_client_id):
            with pytest.raises(ConnectionRefusedError, match="Not authorized"):
                mqtt_client(broker, thief["node_id"], thief["mqtt_password"], client_id=foreign)
        with pytest.raises(ConnectionRefusedError, match="Not authorized"):
            mqtt_client(broker, victim["node_id"], victim["mqtt_password"], client_id=unique("x"))
        # Refused before any takeover: nobody was dropped. A publish the broker confirms
        # comes after every refused connect, so a drop would have been seen by now.
        owner.client.publish(topics.status(victim["node_id"]), "{}", qos=1).wait_for_publish(5)
        assert not owner.dropped.is_set()
        assert not collector.dropped.is_set()
        assert link.connected.is_set()
        assert link.link.generation == generation
        # The thief's password is right: only the client id was refused.
        Connected(broker, thief["node_id"], thief["mqtt_password"], thief["node_id"]).close()
    finally:
        owner.close()
        collector.close()


def test_rotation_binds_an_account_enrolled_before_client_ids_were_bound(
    api, admin, database, broker
):
    node = enroll(api, admin, create_tenant(database), unique("node")).json()
    node_id = node["node_id"]
    with dynsec(broker) as dynsec_admin:
        dynsec_admin.run("setClientId", username=node_id)  # as enrolled before the binding
    unbound = mqtt_client(broker, node_id, node["mqtt_password"], client_id=unique("any"))
    unbound.disconnect()
    unbound.loop_stop()
    rotated = api.post(f"/nodes/{node_id}/credentials", headers=admin.headers)
    assert rotated.status_code == 200, rotated.text
    password = rotated.json()["mqtt_password"]
    with pytest.raises(ConnectionRefusedError, match="Not authorized"):
        mqtt_client(broker, node_id, password, client_id=unique("any"))
    wait_for(lambda: logs_in(broker, node_id, password), 5, "the node under its own id")
