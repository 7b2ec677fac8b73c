"""Who may publish and read ingest confirmations on a real broker, and the API bringing
roles made by an earlier version up to date when it starts."""

from __future__ import annotations

import queue
import secrets
import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient
from paho.mqtt.client import Client

from contract import topics
from control_api import broker_security
from control_api.app import create_app
from control_api.broker_security import API_ROLE, COLLECTOR_ROLE, node_role, node_role_name
from control_api.config import ApiSettings
from tests.control_api.test_node_config import report
from tests.support.api_client import api_client
from tests.support.control_api import api_settings
from tests.support.fleet import (
    count_rows,
    create_node,
    create_tenant,
    dynsec,
    enroll,
    mqtt_client,
)
from tests.support.services import wait_for

pytestmark = pytest.mark.integration

CONFIGS = topics.all_nodes("config")


def _subscribe(client: Client, topic_filter: str) -> bool:
    """Subscribes at QoS 1; True when the broker granted it."""
    answered: queue.Queue[Any] = queue.Queue()
    client.on_subscribe = lambda _c, _u, _mid, reasons, _p: answered.put(reasons[0])
    client.subscribe(topic_filter, qos=1)
    return not answered.get(timeout=10).is_failure


def _inbox(client: Client) -> list[tuple[str, bytes]]:
    received: list[tuple[str, bytes]] = []
    lock = threading.Lock()

    def on_message(_c: Client, _u: object, msg: Any) -> None:
        with lock:
            received.append((msg.topic, bytes(msg.payload)))

    client.on_message = on_message
    return received


def _collector(broker: Any) -> Client:
    return mqtt_client(broker, "collector", broker.passwords["collector"])


def test_a_node_reads_its_own_confirmations_only_and_collectors_publish_them(database, broker):
    tenant = create_tenant(database)
    x, y = enroll(database, broker, tenant, count=2)
    node_x = mqtt_client(broker, x.id, x.password)
    inbox = _inbox(node_x)
    assert _subscribe(node_x, topics.ingested(x.id))
    assert not _subscribe(node_x, topics.ingested(y.id))
    assert not _subscribe(node_x, topics.all_nodes("ingested"))

    collector = _collector(broker)
    for node_id in (y.id, x.id):
        info = collector.publish(topics.ingested(node_id), b'{"seqs":[[1,2]]}', qos=1)
        info.wait_for_publish(10)
    wait_for(lambda: len(inbox) >= 1, 10, "node X's confirmation")
    collector.publish(topics.ingested(x.id), b'{"seqs":[[3,3]]}', qos=1).wait_for_publish(10)
    wait_for(lambda: len(inbox) >= 2, 10, "node X's second confirmation")
    assert inbox == [
        (topics.ingested(x.id), b'{"seqs":[[1,2]]}'),
        (topics.ingested(x.id), b'{"seqs":[[3,3]]}'),
    ]


def _old_node_role(node_id: str) -> dict[str, Any]:
    """Node X's role as enrolment made it before ingest confirmations."""
    role = node_role(node_id)
    ingested = topics.ingested(node_id)
    return {**role, "acls": [a for a in role["acls"] if a["topic"] != ingested]}


def _acls(admin: Any, rolename: str) -> set[tuple[str, str, bool]]:
    role = admin.run("getRole", rolename=rolename)["data"]["role"]
    return {(a["acltype"], a["topic"], a["allow"]) for a in role["acls"]}


def test_the_api_brings_roles_and_accounts_of_an_earlier_version_up_to_date(database, broker):
    tenant = create_tenant(database)
    old = create_node(database, tenant)
    password = secrets.token_urlsafe(12)
    ingested_acl = {"acltype": "publishClientSend", "topic": topics.all_nodes("ingested")}
    with dynsec(broker) as admin:
        # As an installation made before this version has them: the collector role
        # without confirmations, a node's role without them, its account unbound.
        admin.run("removeRoleACL", rolename=COLLECTOR_ROLE, **ingested_acl)
        # ...and the API's role without reported configs.
        for acltype in ("subscribePattern", "publishClientReceive"):
            admin.run("removeRoleACL", rolename=API_ROLE, acltype=acltype, topic=CONFIGS)
        role = _old_node_role(old)
        admin.run("createRole", rolename=role["rolename"], acls=role["acls"])
        admin.run(
            "createClient",
            username=old,
            password=password,
            roles=[{"rolename": role["rolename"]}],
        )
        assert "clientid" not in admin.run("getClient", username=old)["data"]["client"]
        node = mqtt_client(broker, old, password)
        assert not _subscribe(node, topics.ingested(old))
        node.disconnect()
        node.loop_stop()

        with api_client(database, broker):
            wanted = {(a["acltype"], a["topic"], a["allow"]) for a in node_role(old)["acls"]}
            wait_for(
                lambda: _acls(admin, node_role_name(old)) == wanted, 10, "the node role upgraded"
            )
            wait_for(
                lambda: (
                    admin.run("getClient", username=old)["data"]["client"].get("clientid") == old
                ),
                10,
                "the node account bound to its client id",
            )
            assert (*ingested_acl.values(), True) in _acls(admin, COLLECTOR_ROLE)
            # Changing its own role disconnects the API, and it finishes at the reconnect.
            configs = {("subscribePattern", CONFIGS, True), ("publishClientReceive", CONFIGS, True)}
            wait_for(lambda: configs <= _acls(admin, API_ROLE), 10, "the API's role upgraded")
            # The API subscribes again once its own role changed: a node's report arrives.
            reporter = mqtt_client(broker, old, password)
            reporter.publish(topics.config(old), report(old), qos=1).wait_for_publish(10)
            reporter.disconnect()
            reporter.loop_stop()
            wait_for(
                lambda: (
                    count_rows(
                        database,
                        "SELECT count(*) FROM node_reported_configs WHERE node_id = %s",
                        (old,),
                    )
                    == 1
                ),
                10,
                "the node's reported config stored",
            )
        assert admin.reconcile() == 0, "a second run changes nothing"

    node = mqtt_client(broker, old, password)
    inbox = _inbox(node)
    assert _subscribe(node, topics.ingested(old))
    _collector(broker).publish(topics.ingested(old), b'{"seqs":[[7,7]]}', qos=1)
    wait_for(lambda: inbox == [(topics.ingested(old), b'{"seqs":[[7,7]]}')], 10, "confirmation")


def test_the_api_starts_while_the_broker_is_down_and_reconciles_once_it_is_up(database, broker):
    tenant = create_tenant(database)
    old = create_node(database, tenant)
    with dynsec(broker) as admin:
        role = _old_node_role(old)
        admin.run("createRole", rolename=role["rolename"], acls=role["acls"])
    broker.stop()
    settings = ApiSettings(**api_settings(database, broker))
    with TestClient(create_app(settings)) as client:
        assert client.get("/health").status_code == 200
        broker.start()
        wait_for(client.app.state.link.connected.is_set, 20, "API connected")  # type: ignore[attr-defined]
        with dynsec(broker) as admin:
            wanted = {(a["acltype"], a["topic"], a["allow"]) for a in node_role(old)["acls"]}
            wait_for(
                lambda: _acls(admin, node_role_name(old)) == wanted, 10, "the node role upgraded"
            )


def test_the_reconcile_pages_through_every_role(database, broker, monkeypatch):
    monkeypatch.setattr(broker_security, "LIST_PAGE", 2)
    tenant = create_tenant(database)
    olds = [create_node(database, tenant) for _ in range(3)]
    with dynsec(broker) as admin:
        for old in olds:
            role = _old_node_role(old)
            admin.run("createRole", rolename=role["rolename"], acls=role["acls"])
        # Two ACLs (subscribe to and receive its confirmations) for each.
        assert admin.reconcile() == 2 * len(olds)
        for old in olds:
            wanted = {(a["acltype"], a["topic"], a["allow"]) for a in node_role(old)["acls"]}
            assert _acls(admin, node_role_name(old)) == wanted
        assert admin.reconcile() == 0
