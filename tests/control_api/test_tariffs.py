"""Time zones and tariffs through the API: zones validated and inherited, tariff versions
under the rules that keep history, tenant isolation, audit rows, and the CONFIG_PUSH
each change sends (and each node's report heals), against the real API, database and
broker."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from contract.node_config import NodeConfig, effective_config
from contract.tariff import MAX_VERSIONS_IN_CONFIG, TariffVersion
from control_api.site_push import LOCKED, NO_CONFIG
from tests.support.control_api import audit_rows, last_audit_id
from tests.support.fake_node import online_node
from tests.support.fleet import unique
from tests.support.services import wait_for

pytestmark = pytest.mark.integration

WARSAW = "Europe/Warsaw"
# 25 hours apart: their dates always differ.
AHEAD, BEHIND = "Pacific/Kiritimati", "Pacific/Pago_Pago"


def today_in(zone: str) -> date:
    return datetime.now(ZoneInfo(zone)).date()


def g12(valid_from: date, night: float = 0.62, day: float = 1.05) -> dict[str, Any]:
    """A G12-like tariff: cheaper 22-6 and 13-15, export at a flat lower price."""
    periods = [
        {"name": "off-peak", "from_hour": 0, "to_hour": 6, "price": night},
        {"name": "off-peak", "from_hour": 13, "to_hour": 15, "price": night},
        {"name": "off-peak", "from_hour": 22, "to_hour": 24, "price": night},
    ]
    return {
        "valid_from": valid_from.isoformat(),
        "currency": "PLN",
        "import_price": {"default_price": day, "default_name": "peak", "periods": periods},
        "export_price": {"default_price": 0.25},
    }


def as_config(body: dict[str, Any]) -> dict[str, Any]:
    """The version as the agent's config carries it (the contract's JSON)."""
    return TariffVersion.model_validate(body).model_dump(mode="json")


def new_tenant(api, admin, zone: str | None = None) -> dict[str, Any]:
    body = {"slug": unique("t"), "name": "Solar Co"} | ({"timezone": zone} if zone else {})
    created = api.post("/tenants", json=body, headers=admin.headers)
    assert created.status_code == 201, created.text
    return dict(created.json())


def report(node, **config: Any) -> None:
    """The node reports the config it runs, as the agent does at each connect."""
    effective = effective_config(NodeConfig(node_id=node.id, node_secret="s", **config))
    body = {"version": None, "ts": datetime.now(UTC).isoformat(), "config": effective}
    node.report_config(json.dumps(body))


def reported(api, admin, node_id: str, **expected: Any) -> dict[str, Any]:
    def shown() -> dict[str, Any] | None:
        response = api.get(f"/nodes/{node_id}/config", headers=admin.headers)
        body = response.json() if response.status_code == 200 else None
        config = body["config"] if body else {}
        return body if body and all(config.get(k) == v for k, v in expected.items()) else None

    found: dict[str, Any] = wait_for(shown, 10, f"config {expected} reported by {node_id}")
    return found


def test_zones_are_validated_inherited_and_shown(api, actors, database):
    admin = actors.admin.headers
    tenant = new_tenant(api, actors.admin, WARSAW)
    assert tenant["timezone"] == WARSAW
    assert new_tenant(api, actors.admin)["timezone"] == "UTC"
    for bad in ("Mars/Olympus_Mons", "", "Europe/Warsaw\u0000", "x" * 65, "localtime"):
        refused = api.post(
            "/tenants", json={"slug": unique("t"), "name": "X", "timezone": bad}, headers=admin
        )
        assert refused.status_code == 422, bad
    refused = api.post(
        "/tenants", json={"slug": unique("t"), "name": "X", "timezone": "Mars/Base"}, headers=admin
    )
    assert "is not an IANA time zone" in json.dumps(refused.json())
    assert "Mars/Base" not in json.dumps(refused.json())  # an answer never echoes the input

    node_id = unique("node")
    enrolled = api.post("/nodes", json={"id": node_id, "tenant_id": tenant["id"]}, headers=admin)
    assert enrolled.status_code == 201
    shown = api.get(f"/nodes/{node_id}", headers=admin).json()
    assert (shown["timezone"], shown["effective_timezone"]) == (None, WARSAW)
    own = api.patch(f"/nodes/{node_id}", json={"timezone": "Europe/Lisbon"}, headers=admin)
    assert own.status_code == 200
    assert (own.json()["timezone"], own.json()["effective_timezone"]) == (
        "Europe/Lisbon",
        "Europe/Lisbon",
    )
    # Renaming leaves the zone; null gives the tenant's back.
    renamed = api.patch(f"/nodes/{node_id}", json={"display_name": "Roof"}, headers=admin)
    assert renamed.json()["timezone"] == "Europe/Lisbon"
    before = last_audit_id(database)
    moved = api.patch(f"/tenants/{tenant['id']}", json={"timezone": "Europe/Berlin"}, headers=admin)
    assert moved.status_code == 200
    assert moved.json()["timezone"] == "Europe/Berlin"
    assert moved.json()["config_pushes"] == {
        "pushed": [],
        "skipped": [{"node_id": node_id, "reason": NO_CONFIG}],
    }
    [row] = audit_rows(database, before, action="update_tenant")
    assert row["params"]["timezone"] == "Europe/Berlin"
    inherit = api.patch(f"/nodes/{node_id}", json={"timezone": None}, headers=admin)
    assert (inherit.json()["timezone"], inherit.json()["effective_timezone"]) == (
        None,
        "Europe/Berlin",
    )
    bad = api.patch(f"/nodes/{node_id}", json={"timezone": "Europe/Atlantis"}, headers=admin)
    assert bad.status_code == 422
    assert api.get(f"/nodes/{node_id}", headers=admin).json()["effective_timezone"] == (
        "Europe/Berlin"
    )
    with_zone = api.post(
        "/nodes",
        json={"id": unique("node"), "tenant_id": tenant["id"], "timezone": "Europe/Atlantis"},
        headers=admin,
    )
    assert with_zone.status_code == 422


def test_versions_keep_history_unless_backdated_and_audited(api, actors, database):
    admin = actors.admin.headers
    tenant = new_tenant(api, actors.admin, AHEAD)
    path = f"/tenants/{tenant['id']}/tariffs"
    today = today_in(AHEAD)
    # The tenant's zone decides what "today" is: the site zone's today is its yesterday.
    past = api.post(path, json=g12(today_in(BEHIND)), headers=admin)
    assert past.status_code == 409
    assert "backdate=true" in past.json()["detail"]
    backdated = api.post(path, params={"backdate": "true"}, json=g12(today - timedelta(days=30)))
    assert backdated.status_code == 401  # no token: nothing changes
    before = last_audit_id(database)
    backdated = api.post(
        path, params={"backdate": "true"}, json=g12(today - timedelta(days=30)), headers=admin
    )
    assert backdated.status_code == 201, backdated.text
    assert backdated.json()["replaced"] is False
    assert backdated.json()["created_by"] == actors.admin.id
    [row] = audit_rows(database, before, action="set_tenant_tariff")
    assert row["params"]["backdate"] is True
    assert row["params"]["valid_from"] == (today - timedelta(days=30)).isoformat()
    assert row["params"]["tariff"]["export_price"]["default_price"] == 0.25
    assert row["tenant_id"] == tenant["id"]

    future = today + timedelta(days=10)
    assert api.post(path, json=g12(today), headers=admin).status_code == 201
    assert api.post(path, json=g12(future), headers=admin).status_code == 201
    again = api.post(path, json=g12(future, day=1.2), headers=admin)
    assert again.status_code == 409
    assert "to replace it" in again.json()["detail"]
    replaced = api.post(path, params={"backdate": "true"}, json=g12(future, day=1.2), headers=admin)
    assert replaced.json()["replaced"] is True
    listed = api.get(path, headers=actors.admin.headers).json()
    assert [v["valid_from"] for v in listed] == [
        (today - timedelta(days=30)).isoformat(),
        today.isoformat(),
        future.isoformat(),
    ]
    assert listed[-1]["import_price"]["default_price"] == 1.2

    # In force already (today's), or not there at all.
    in_force = api.delete(f"{path}/{today.isoformat()}", headers=admin)
    assert in_force.status_code == 409
    assert "has been in force" in in_force.json()["detail"]
    missing = api.delete(f"{path}/{(future + timedelta(days=1)).isoformat()}", headers=admin)
    assert missing.status_code == 404
    assert api.delete(f"{path}/{future.isoformat()}", headers=admin).status_code == 200
    before = last_audit_id(database)
    forced = api.delete(f"{path}/{today.isoformat()}", params={"backdate": "true"}, headers=admin)
    assert forced.status_code == 200
    [row] = audit_rows(database, before, action="delete_tenant_tariff")
    assert row["params"]["backdate"] is True
    assert [v["valid_from"] for v in api.get(path, headers=admin).json()] == [
        (today - timedelta(days=30)).isoformat()
    ]
    # The grids the analytics read, beside the tariff as given.
    with database.connect() as conn:
        prices, export, names = conn.execute(
            "SELECT import_prices, export_prices, import_periods FROM tariffs WHERE tenant_id = %s",
            (tenant["id"],),
        ).fetchone()
    assert len(prices) == len(export) == len(names) == 168
    assert (prices[0], prices[12], prices[13], prices[22 + 24]) == (0.62, 1.05, 0.62, 0.62)
    assert (names[5], names[6]) == ("off-peak", "peak")
    assert set(export) == {0.25}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"currency": "zł"}, "currency"),
        ({"import_price": {"default_price": 1.0, "periods": [{"name": "a", "from_hour": 5}]}}, ""),
        (
            {
                "import_price": {
                    "default_price": 1.0,
                    "periods": [
                        {"name": "a", "from_hour": 1, "to_hour": 5, "price": 1},
                        {"name": "b", "from_hour": 4, "to_hour": 6, "price": 1},
                    ],
                }
            },
            "overlap",
        ),
        ({"export_price": {"default_price": float("1e309")}}, ""),
        ({"valid_from": "2026-02-30"}, "valid_from"),
        # Beyond what a timeline's instants can hold in every zone (a schema test met it).
        ({"valid_from": "9999-12-31"}, "valid_from"),
        ({"valid_from": "1999-12-31"}, "valid_from"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_tariffs_are_refused(api, actors, change, message):
    tomorrow = today_in("UTC") + timedelta(days=1)
    body = {**g12(tomorrow), **change}
    response = api.post(
        f"/tenants/{actors.tenant_a}/tariffs",
        content=json.dumps(body).replace("Infinity", "1e309"),
        headers={**actors.admin.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert message in json.dumps(response.json())


def test_a_site_without_any_tariff_has_an_empty_timeline(api, actors, node):
    """It answered 500 (the API schema test met it): no version, so nothing ends."""
    timeline = api.get(f"/nodes/{node.id}/tariff", headers=actors.operator_a.headers)
    assert timeline.status_code == 200, timeline.text
    assert timeline.json()["versions"] == []


def test_only_admins_set_and_only_the_tenant_reads(api, actors, node):
    body = g12(today_in("UTC") + timedelta(days=3))
    tenant_path = f"/tenants/{actors.tenant_a}/tariffs"
    site_path = f"/nodes/{node.id}/tariffs"
    for user in (actors.operator_a, actors.viewer_a, actors.operator_b):
        for path in (tenant_path, site_path):
            assert api.post(path, json=body, headers=user.headers).status_code == 403
            deleted = api.delete(f"{path}/{body['valid_from']}", headers=user.headers)
            assert deleted.status_code == 403
    assert api.post(tenant_path, json=body, headers=actors.admin.headers).status_code == 201
    for user in (actors.operator_a, actors.viewer_a):
        assert (
            api.get(tenant_path, headers=user.headers).json()[0]["valid_from"]
            == (body["valid_from"])
        )
        assert api.get(f"/nodes/{node.id}/tariff", headers=user.headers).status_code == 200
        assert api.get(site_path, headers=user.headers).json() == []
    for path in (tenant_path, site_path, f"/nodes/{node.id}/tariff"):
        assert api.get(path, headers=actors.operator_b.headers).status_code == 404
    own = api.get(f"/tenants/{actors.tenant_b}/tariffs", headers=actors.operator_b.headers)
    assert own.status_code == 200
    assert api.get("/tenants/999999999/tariffs", headers=actors.admin.headers).status_code == 404


def test_the_effective_timeline_takes_the_sites_own_versions_from_the_first_on(
    api, actors, database
):
    admin = actors.admin.headers
    tenant = new_tenant(api, actors.admin, AHEAD)
    node_id = unique("node")
    api.post(
        "/nodes",
        json={"id": node_id, "tenant_id": tenant["id"], "timezone": BEHIND},
        headers=admin,
    )
    today = today_in(BEHIND)
    tenant_path, site_path = f"/tenants/{tenant['id']}/tariffs", f"/nodes/{node_id}/tariffs"
    old, later = today - timedelta(days=100), today + timedelta(days=20)
    own = today + timedelta(days=5)
    backdated = api.post(tenant_path, params={"backdate": "true"}, json=g12(old), headers=admin)
    assert backdated.status_code == 201
    assert api.post(tenant_path, json=g12(later, day=2.0), headers=admin).status_code == 201
    shown = api.get(f"/nodes/{node_id}/tariff", headers=admin).json()
    assert (shown["timezone"], shown["today"]) == (BEHIND, today.isoformat())
    assert [(v["source"], v["valid_from"], v["in_force"]) for v in shown["versions"]] == [
        ("tenant", old.isoformat(), True),
        ("tenant", later.isoformat(), False),
    ]
    # The site's zone decides its today: the tenant's today is the site's tomorrow.
    site_today = api.post(site_path, json=g12(today, night=0.1), headers=admin)
    assert site_today.status_code == 201, site_today.text
    assert api.post(site_path, json=g12(own, night=0.3), headers=admin).status_code == 201
    shown = api.get(f"/nodes/{node_id}/tariff", headers=admin).json()
    assert [
        (v["source"], v["valid_from"], v["valid_until"], v["in_force"]) for v in shown["versions"]
    ] == [
        ("tenant", old.isoformat(), today.isoformat(), False),
        ("site", today.isoformat(), own.isoformat(), True),
        ("site", own.isoformat(), None, False),
    ]
    assert shown["versions"][1]["import_price"]["periods"][0]["price"] == 0.1
    assert [v["valid_from"] for v in api.get(site_path, headers=admin).json()] == [
        today.isoformat(),
        own.isoformat(),
    ]


def test_a_change_pushes_the_merged_config_to_the_nodes_concerned(api, actors, database, broker):
    admin = actors.admin
    tenant = new_tenant(api, admin, WARSAW)
    tenant_path = f"/tenants/{tenant['id']}/tariffs"
    today = today_in(WARSAW)
    with (
        online_node(api, admin, tenant["id"], database, broker) as node,
        online_node(api, admin, tenant["id"], database, broker) as silent,
    ):
        # No tariff yet and the tenant's zone: the node's report starts in UTC, so the
        # hub pushes the zone at once.
        report(node, modbus_host="192.168.1.7")
        [first] = node.received()
        assert first["params"]["config"]["timezone"] == WARSAW
        assert first["params"]["config"]["tariffs"] == []
        assert first["params"]["config"]["modbus_host"] == "192.168.1.7"
        report(node, modbus_host="192.168.1.7", timezone=WARSAW)
        reported(api, admin, node.id, timezone=WARSAW)

        before = last_audit_id(database)
        body = g12(today + timedelta(days=1))
        set_ = api.post(tenant_path, json=body, headers=admin.headers)
        assert set_.status_code == 201, set_.text
        pushes = set_.json()["config_pushes"]
        assert [p["node_id"] for p in pushes["pushed"]] == [node.id]
        assert pushes["skipped"] == [{"node_id": silent.id, "reason": NO_CONFIG}]
        pushed = node.received(2)[1]
        assert pushed["id"] == pushes["pushed"][0]["command_id"]
        assert pushed["type"] == "CONFIG_PUSH"
        config = pushed["params"]["config"]
        assert config["tariffs"] == [as_config(body)]
        assert (config["timezone"], config["modbus_host"]) == (WARSAW, "192.168.1.7")
        assert pushed["params"]["version"] == pushes["pushed"][0]["version"]
        assert silent.commands == []
        [row] = audit_rows(database, before, action="set_tenant_tariff")
        assert row["params"]["config_pushes"]["pushed"] == [
            {"node_id": node.id, "command_id": pushed["id"]}
        ]
        shown = api.get(f"/commands/{pushed['id']}", headers=admin.headers).json()
        assert shown["params"]["config"] == config
        assert shown["issued_by"] == admin.id

        # The node runs it: a change that leaves its settings as they are pushes nothing.
        report(node, modbus_host="192.168.1.7", timezone=WARSAW, tariffs=[as_config(body)])
        reported(api, admin, node.id, tariffs=[as_config(body)])
        renamed = api.patch(f"/tenants/{tenant['id']}", json={"name": "Sun"}, headers=admin.headers)
        assert renamed.json()["config_pushes"] == {"pushed": [], "skipped": []}

        # A site's own zone: pushed to that node only, the versions from its today on.
        zoned = api.patch(f"/nodes/{node.id}", json={"timezone": BEHIND}, headers=admin.headers)
        [moved] = zoned.json()["config_pushes"]["pushed"]
        third = node.received(3)[2]
        assert third["id"] == moved["command_id"]
        assert third["params"]["config"]["timezone"] == BEHIND
        assert third["params"]["config"]["tariffs"] == [as_config(body)]

        # A node that reports for the first time gets the zone and tariffs then.
        report(silent)
        [healed] = silent.received()
        assert healed["params"]["config"]["timezone"] == WARSAW
        assert healed["params"]["config"]["tariffs"] == [as_config(body)]
        [row] = audit_rows(database, before, action="push_site_settings")
        assert (row["node_id"], row["actor_user_id"]) == (silent.id, None)
        # Reported again before it applied the push (a reconnect): nothing more is sent.
        # (The report and any push it causes are stored in one transaction.)
        report(silent, modbus_port=1502)
        reported(api, admin, silent.id, modbus_port=1502)
        issued = api.get(f"/nodes/{silent.id}/commands", headers=admin.headers).json()
        assert [c["id"] for c in issued] == [healed["id"]]


def test_a_safety_locked_site_gets_no_push_and_no_control_command(api, actors, database, broker):
    admin = actors.admin
    tenant = new_tenant(api, admin, WARSAW)
    with online_node(api, admin, tenant["id"], database, broker) as node:
        report(node, timezone=WARSAW)
        reported(api, admin, node.id, timezone=WARSAW)
        lock = api.put(
            f"/nodes/{node.id}/safety-lock", json={"reason": "storm"}, headers=admin.headers
        )
        assert lock.status_code == 202, lock.text
        [sent] = node.received()
        assert (sent["type"], sent["params"]["locked"]) == ("SAFETY_LOCK", True)

        body = g12(today_in(WARSAW) + timedelta(days=1))
        set_ = api.post(f"/tenants/{tenant['id']}/tariffs", json=body, headers=admin.headers)
        assert set_.status_code == 201, set_.text
        assert set_.json()["config_pushes"] == {
            "pushed": [],
            "skipped": [{"node_id": node.id, "reason": LOCKED}],
        }
        charge = {"type": "FORCE_CHARGE", "params": {"power_w": 1000, "duration_s": 60}}
        refused = api.post(f"/nodes/{node.id}/commands", json=charge, headers=admin.headers)
        assert refused.status_code == 409
        assert "is safety-locked (remote, by " in refused.json()["detail"]
        logs = {"type": "FETCH_LOGS", "params": {"lines": 10}}
        assert (
            api.post(f"/nodes/{node.id}/commands", json=logs, headers=admin.headers).status_code
            == 202
        )


def test_operator_configs_carry_the_hubs_zone_and_tariffs(api, actors, node):
    headers = actors.operator_a.headers
    for key in ("timezone", "tariffs"):
        for method in ("PUT", "PATCH"):
            refused = api.request(
                method, f"/nodes/{node.id}/config", json={"config": {key: None}}, headers=headers
            )
            assert refused.status_code == 422
            assert "the hub's" in refused.json()["detail"]
    tomorrow = today_in("UTC") + timedelta(days=1)
    set_ = api.post(
        f"/tenants/{actors.tenant_a}/tariffs", json=g12(tomorrow), headers=actors.admin.headers
    )
    assert set_.status_code == 201
    put = api.put(
        f"/nodes/{node.id}/config", json={"config": {"modbus_port": 1502}}, headers=headers
    )
    assert put.status_code == 202
    assert put.json()["config"]["timezone"] == "UTC"
    assert put.json()["config"]["tariffs"] == [as_config(g12(tomorrow))]
    # Deleting the tenant's version pushes its absence.
    deleted = api.delete(
        f"/tenants/{actors.tenant_a}/tariffs/{tomorrow.isoformat()}", headers=actors.admin.headers
    )
    [pushed] = deleted.json()["config_pushes"]["pushed"]
    assert node.received(2)[1]["params"]["config"]["tariffs"] == []
    assert node.commands[1]["id"] == pushed["command_id"]


def test_a_node_moved_to_another_tenant_gets_its_zone_and_keeps_its_own_versions(
    api, actors, node, database
):
    admin = actors.admin.headers
    tenant = new_tenant(api, actors.admin, WARSAW)
    later = today_in(WARSAW) + timedelta(days=2)
    own = api.post(f"/nodes/{node.id}/tariffs", json=g12(later, night=0.2), headers=admin)
    assert own.status_code == 201
    assert own.json()["config_pushes"] == {
        "pushed": [],
        "skipped": [{"node_id": node.id, "reason": NO_CONFIG}],
    }
    report(node, tariffs=[as_config(g12(later, night=0.2))])
    reported(api, actors.admin, node.id, tariffs=[as_config(g12(later, night=0.2))])
    assert node.commands == []  # its report carries them (and UTC, tenant A's zone)
    moved = api.patch(f"/nodes/{node.id}", json={"tenant_id": tenant["id"]}, headers=admin)
    assert moved.status_code == 200, moved.text
    [pushed] = moved.json()["config_pushes"]["pushed"]
    [command] = node.received()
    assert command["id"] == pushed["command_id"]
    assert command["params"]["config"]["timezone"] == WARSAW
    assert command["params"]["config"]["tariffs"] == [as_config(g12(later, night=0.2))]
    with database.connect() as conn:
        owners = conn.execute(
            "SELECT DISTINCT tenant_id FROM tariffs WHERE node_id = %s", (node.id,)
        ).fetchall()
    assert owners == [(tenant["id"],)]
    # Its old tenant's users see it no longer; its new tenant's version list does not
    # hold the site's own.
    assert api.get(f"/nodes/{node.id}/tariff", headers=actors.viewer_a.headers).status_code == 404
    assert api.get(f"/tenants/{tenant['id']}/tariffs", headers=admin).json() == []


def test_a_timeline_holds_what_a_node_can_carry(api, actors):
    admin = actors.admin.headers
    path = f"/tenants/{actors.tenant_a}/tariffs"
    tomorrow = today_in("UTC") + timedelta(days=1)
    for day in range(MAX_VERSIONS_IN_CONFIG):
        assert api.post(path, json=g12(tomorrow + timedelta(days=day)), headers=admin).is_success
    too_many = api.post(path, json=g12(tomorrow + timedelta(days=99)), headers=admin)
    assert too_many.status_code == 409
    assert f"holds at most {MAX_VERSIONS_IN_CONFIG}" in too_many.json()["detail"]
    # Periods the contract allows, but more text than a node's config can carry.
    periods = [
        {"name": "p" * 32, "weekdays": [day], "from_hour": hour, "to_hour": hour + 1, "price": 0.5}
        for day in range(1, 8)
        for hour in range(0, 24, 5)
    ][:32]
    big = {"default_price": 1.0, "periods": periods}
    site_path = f"/nodes/{unique('node')}/tariffs"
    node_id = site_path.split("/")[2]
    api.post("/nodes", json={"id": node_id, "tenant_id": actors.tenant_b}, headers=admin)
    body = {**g12(tomorrow), "import_price": big, "export_price": big}
    assert api.post(site_path, json=body, headers=admin).status_code == 201
    body["valid_from"] = (tomorrow + timedelta(days=1)).isoformat()
    too_big = api.post(site_path, json=body, headers=admin)
    assert too_big.status_code == 422
    assert "bytes of the node's config" in too_big.json()["detail"]
    assert len(api.get(site_path, headers=admin).json()) == 1


def test_a_change_no_node_could_report_back_is_refused_naming_the_site(api, actors, node):
    admin = actors.admin.headers
    long_urls = {
        "update_index_url": "https://" + "a" * 2030,
        "update_find_links": "https://" + "b" * 2030,
    }
    report(node, **long_urls)
    reported(api, actors.admin, node.id, **long_urls)
    periods = [
        {"name": "p" * 32, "weekdays": [day], "from_hour": hour, "to_hour": hour + 1, "price": 0.5}
        for day in range(1, 8)
        for hour in range(0, 24, 5)
    ][:32]
    big = {"default_price": 1.0, "periods": periods}
    tomorrow = today_in("UTC") + timedelta(days=1)
    path = f"/tenants/{actors.tenant_a}/tariffs"
    body = {**g12(tomorrow), "import_price": big, "export_price": big}
    answers = [api.post(path, json=body, headers=admin)]
    for day in range(1, MAX_VERSIONS_IN_CONFIG):
        answers.append(api.post(path, json=g12(tomorrow + timedelta(days=day)), headers=admin))
        if answers[-1].status_code != 201:
            break
    assert [a.status_code for a in answers[:-1]] == [201] * (len(answers) - 1)
    refused = answers[-1]
    assert refused.status_code == 422
    assert f"site {node.id}: invalid config: about" in refused.json()["detail"]
    # Nothing of the refused change stays, and the node got only the accepted ones.
    assert len(api.get(path, headers=admin).json()) == len(answers) - 1
    assert len(node.received(len(answers) - 1)) == len(answers) - 1
