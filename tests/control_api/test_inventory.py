"""Node inventories in the API: GET /nodes and /nodes/{id} include them, and GET /nodes
filters by inverter model and firmware (exact, or a prefix ending in `*`), within the
caller's tenant. The end-to-end test runs the real agent on the simulator."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from collector.inventory import record_inventory
from contract.inventory import NodeInventory
from edge.simulator.device import FIRMWARE, MANUFACTURER, MODEL, OPTIONS, SimulatedInverter
from edge.simulator.site import Site
from tests.conftest import SIMULATOR_UNIT
from tests.edge.simulated_site import modbus_server
from tests.support.agent import AgentProcess
from tests.support.control_api import PASSWORD, create_user
from tests.support.fleet import Node, create_node, unique
from tests.support.services import stop_process, wait_for

pytestmark = pytest.mark.integration


def store(database, node_id: str, model: str, firmware: str, ts: datetime) -> None:
    """Stores a node's inventory as the collector does."""
    inventory = NodeInventory.model_validate(
        {
            "node_id": node_id,
            "ts": ts,
            "inverter": {"model": model, "firmware": firmware, "sunspec_model": 103},
            "battery": {"sunspec_model": 802, "capacity_wh": 13_500.0},
            "agent": {"version": "1.2.3", "python": "3.11.2", "os": "Linux"},
        },
        strict=False,
    )
    with database.connect() as conn, conn.cursor() as cur:
        [tenant_id] = cur.execute(
            "SELECT tenant_id FROM nodes WHERE id = %s", (node_id,)
        ).fetchone()
        record_inventory(cur, inventory, tenant_id, ts)


def ids(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [node["id"] for node in response.json()]


def test_nodes_include_their_inventory_and_filter_by_model_and_firmware(api, actors, database):
    tag = secrets.token_hex(3)
    now = datetime.now(UTC).replace(microsecond=0)
    a_old = create_node(database, actors.tenant_a)
    a_new = create_node(database, actors.tenant_a)
    b_new = create_node(database, actors.tenant_b)
    never = create_node(database, actors.tenant_a)
    store(database, a_old, f"Hybrid {tag}", f"{tag}.1.9", now)
    store(database, a_new, f"Hybrid {tag} XL", f"{tag}.2.0", now)
    store(database, b_new, f"Hybrid {tag}", f"{tag}.2.0", now)
    admin, operator_a = actors.admin.headers, actors.operator_a.headers

    detail = api.get(f"/nodes/{a_new}", headers=operator_a).json()
    assert detail["inventory"]["inverter"]["firmware"] == f"{tag}.2.0"
    assert detail["inventory"]["battery"]["capacity_wh"] == 13_500.0
    assert detail["inventory"]["meter"] is None
    assert detail["inventory"]["reported_at"] == now.isoformat().replace("+00:00", "Z")
    assert api.get(f"/nodes/{never}", headers=operator_a).json()["inventory"] is None

    by_firmware = f"/nodes?firmware={tag}.2.0"
    assert ids(api.get(by_firmware, headers=admin)) == sorted([a_new, b_new])
    # A tenant's user sees only its own tenant's nodes, filtered or not.
    assert ids(api.get(by_firmware, headers=operator_a)) == [a_new]
    assert ids(api.get(by_firmware, headers=actors.operator_b.headers)) == [b_new]
    assert ids(api.get(f"/nodes?firmware={tag}.*", headers=admin)) == sorted([a_old, a_new, b_new])
    assert ids(api.get(f"/nodes?model=Hybrid {tag}", headers=admin)) == sorted([a_old, b_new])
    prefix = f"/nodes?model=Hybrid {tag}*&firmware={tag}.1*"
    assert ids(api.get(prefix, headers=admin)) == [a_old]
    # LIKE's own wildcards are plain characters in a prefix.
    assert ids(api.get(f"/nodes?firmware={tag}%25*", headers=admin)) == []
    assert ids(api.get(f"/nodes?firmware={tag}_1.9", headers=admin)) == []
    # In a prefix too: unescaped, `_` would match the `.` of "<tag>.1.9".
    assert ids(api.get(f"/nodes?firmware={tag}_1*", headers=admin)) == []


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("firmware=", "at least 1 character"),
        ("firmware=1*2", "should match pattern"),
        ("firmware=*", "should match pattern"),
        (f"model={'x' * 40}", "at most 33 characters"),
        ("model=%1B%5B2J", "printable"),
        ("model=a%00b", "U+0000"),
    ],
)
def test_invalid_inventory_filters_are_refused_with_a_reason(api, actors, query, reason):
    response = api.get(f"/nodes?{query}", headers=actors.admin.headers)
    assert response.status_code == 422, response.text
    assert reason in response.text


@pytest.mark.e2e
def test_the_agent_reports_its_inventory_and_a_firmware_update(
    api_process, database, broker, collector_factory, tmp_path
):
    collector_factory().start()
    client = api_process.client()
    admin = create_user(database, "admin", None)
    token = client.post("/auth/login", json={"email": admin.email, "password": PASSWORD})
    client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
    tenant = client.post("/tenants", json={"slug": unique("t"), "name": "Site"}).json()
    issued = client.post("/nodes", json={"id": unique("node"), "tenant_id": tenant["id"]}).json()
    node = Node(issued["node_id"], tenant["id"], issued["mqtt_password"])
    inverter = SimulatedInverter(Site(seed=7), SIMULATOR_UNIT)

    def inventory() -> dict[str, Any] | None:
        found: dict[str, Any] | None = client.get(f"/nodes/{node.id}").json()["inventory"]
        return found

    with modbus_server(inverter) as port:
        agent = AgentProcess(
            tmp_path,
            broker,
            node,
            port,
            SIMULATOR_UNIT,
            via_proxy=False,
            node_secret=issued["node_secret"],
            poll_interval_s=0.5,
            inventory_interval_s=1.0,
        ).start()
        try:
            first = wait_for(inventory, 60, "the node's inventory at the API")
            assert first["inverter"] == {
                "manufacturer": MANUFACTURER,
                "model": MODEL,
                "options": OPTIONS,
                "firmware": FIRMWARE,
                "serial": "SIM-000007",
                "sunspec_model": 103,
            }
            assert first["battery"]["sunspec_model"] == 802
            assert first["battery"]["capacity_wh"] == pytest.approx(10_000)
            assert first["battery"]["max_charge_w"] == pytest.approx(5_000)
            assert first["meter"] == {"sunspec_model": 203}
            assert first["agent"]["version"]

            inverter.firmware = "1.1.0"
            updated = wait_for(
                lambda: (found := inventory()) and found["inverter"]["firmware"] == "1.1.0",
                30,
                "the firmware update at the API",
            )
            assert updated
            listed = client.get("/nodes?firmware=1.1*").json()
            assert node.id in [n["id"] for n in listed]
            assert node.id not in [n["id"] for n in client.get("/nodes?firmware=1.0*").json()]
        finally:
            stop_process(agent.proc)
            agent.release()
    with database.connect() as conn:
        history = conn.execute(
            "SELECT changed_at, changes FROM node_inventory_history WHERE node_id = %s"
            " ORDER BY changed_at",
            (node.id,),
        ).fetchall()
    assert len(history) == 2
    assert history[0][1]["inverter.serial"] == {"from": None, "to": "SIM-000007"}
    assert history[1][1] == {"inverter.firmware": {"from": FIRMWARE, "to": "1.1.0"}}
    assert history[1][0] - history[0][0] < timedelta(minutes=5)
