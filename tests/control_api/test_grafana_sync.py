"""The tenant sync against a Grafana HTTP API.

No Grafana binary can be installed here (Debian, PyPI and npm carry none), so these
tests run the real sync, through `grafana-client`, against tests/support/grafana_api.py:
a server implementing the documented shapes of the endpoints the client calls. The
database is real and of its own, so the sync sees exactly the tenants made here."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine

from control_api.grafana_sync import GrafanaSyncError, TenantSync, org_name, tenant_dashboards
from control_api.grafana_target import GrafanaTarget
from control_api.tenant_roles import database_role_name
from grafana.datasources import TIMESCALE_UID
from tests.support.api_client import api_client
from tests.support.control_api import create_user, log_in
from tests.support.fleet import create_tenant, unique
from tests.support.grafana_api import FakeGrafana
from tests.support.services import Database, empty_database, migrate, wait_for
from tests.support.tenants import as_role
from timescale.database import sqlalchemy_url

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def own_database() -> Iterator[Database]:
    with empty_database("grafana_sync") as db:
        migrate(db)
        yield db


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    fake = FakeGrafana()
    yield fake
    fake.close()


@pytest.fixture
def sync(own_database, grafana) -> TenantSync:
    engine = create_engine(
        sqlalchemy_url(own_database.url),
        connect_args={"prepare_threshold": 5 if own_database.prepared_statements else None},
    )
    target = GrafanaTarget(
        url=grafana.url,
        user=grafana.state.admin[0],
        password=grafana.state.admin[1],
        db_host="timescaledb:5432",
        db_name="wattfleet",
    )
    return TenantSync(engine, target)


def slug_of(db, tenant_id):
    with db.connect() as conn:
        return conn.execute("SELECT slug FROM tenants WHERE id = %s", (tenant_id,)).fetchone()[0]


def test_each_tenant_gets_an_org_with_its_datasource_dashboards_and_viewers(
    own_database, grafana, sync
):
    db = own_database
    tenant_a, tenant_b = create_tenant(db), create_tenant(db)
    alice = create_user(db, "operator", tenant_a)
    bob = create_user(db, "viewer", tenant_b)
    create_user(db, "admin", None)  # admins use the admin organization, not tenant ones

    report = sync.run()

    state = grafana.state
    org_a = state.org_by_name(org_name(slug_of(db, tenant_a)))
    org_b = state.org_by_name(org_name(slug_of(db, tenant_b)))
    assert org_a
    assert org_b
    assert set(report.created_orgs) >= {state.orgs[org_a], state.orgs[org_b]}
    source = state.datasources[org_a][TIMESCALE_UID]
    assert source["user"] == database_role_name(tenant_a)
    assert source["jsonData"] == {
        "database": "wattfleet",
        "sslmode": "disable",
        "timescaledb": True,
        "postgresVersion": 1500,
    }
    # The password Grafana holds logs in as the tenant's role, which sees its tenant only.
    with as_role(db, source["user"], source["secureJsonData"]["password"]) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == source["user"]
    assert sorted(state.dashboards[org_a]) == [
        "wattfleet-savings",
        "wattfleet-site",
        "wattfleet-sites",
    ]
    members = {state.users[uid]["email"]: role for uid, role in state.members[org_a].items()}
    assert members == {"admin@localhost": "Admin", alice.email: "Viewer"}
    members_b = {state.users[uid]["email"] for uid in state.members[org_b]}
    assert bob.email in members_b
    assert alice.email not in members_b
    # The admin organization (its datasource reads every tenant) has no tenant user.
    assert {state.users[uid]["email"] for uid in state.members[1]} == {"admin@localhost"}


def test_a_tenant_user_in_the_admin_organization_is_taken_out(own_database, grafana, sync):
    """Earlier syncs created tenant users without an organization: Grafana put them in
    its auto-assign one, the admin organization, as Viewers of every tenant's data."""
    db = own_database
    user = create_user(db, "viewer", create_tenant(db))
    admin = create_user(db, "admin", None)
    sync.run()
    state = grafana.state
    uid = next(u for u, v in state.users.items() if v["email"] == user.email)
    state.members[1][uid] = "Viewer"
    report = sync.run()
    assert uid not in state.members[1]
    assert f"Main Org./{user.email}" in report.removed_members
    # Also once the user is disabled: no way back in through the admin organization.
    with db.connect() as conn:
        conn.execute("UPDATE users SET disabled = true WHERE id = %s", (user.id,))
    state.members[1][uid] = "Viewer"
    sync.run()
    assert uid not in state.members[1]
    assert admin.email not in {state.users[u]["email"] for u in state.members[1]}


def test_a_second_run_changes_nothing(own_database, grafana, sync):
    create_user(own_database, "viewer", create_tenant(own_database))
    sync.run()
    writes = len(grafana.state.changes())
    again = sync.run()
    assert grafana.state.changes()[writes:] == []
    assert again.created_orgs == again.updated_dashboards == again.added_members == []


def test_drift_in_grafana_is_put_back_and_what_is_gone_is_removed(own_database, grafana, sync):
    db = own_database
    tenant = create_tenant(db)
    gone = create_tenant(db)
    user = create_user(db, "viewer", tenant)
    sync.run()
    state = grafana.state
    org = state.org_by_name(org_name(slug_of(db, tenant)))
    # Someone edits a dashboard and promotes the viewer in Grafana.
    state.dashboards[org]["wattfleet-site"]["title"] = "edited by hand"
    uid = next(u for u, v in state.users.items() if v["email"] == user.email)
    state.members[org][uid] = "Editor"
    # The tenant `gone` is deleted.
    gone_org = org_name(slug_of(db, gone))
    with db.connect() as conn:
        conn.execute("DELETE FROM tenant_roles WHERE tenant_id = %s", (gone,))
        conn.execute("DELETE FROM tenants WHERE id = %s", (gone,))
    report = sync.run()
    assert state.dashboards[org]["wattfleet-site"]["title"] == "Site"
    assert state.members[org][uid] == "Viewer"
    assert org_name(slug_of(db, tenant)) in state.orgs.values()
    assert report.deleted_orgs == [gone_org]
    assert gone_org not in state.orgs.values()
    # The user leaves.
    with db.connect() as conn:
        conn.execute("UPDATE users SET disabled = true WHERE id = %s", (user.id,))
    removed = sync.run()
    assert removed.removed_members == [f"{state.orgs[org]}/{user.email}"]
    assert uid not in state.members[org]


def test_syncing_one_tenant_touches_only_its_org(own_database, grafana, sync):
    db = own_database
    sync.run()
    tenant = create_tenant(db)
    report = sync.run(only_tenant=tenant)
    assert report.created_orgs == [org_name(slug_of(db, tenant))]
    assert report.deleted_orgs == []


def test_grafana_unreachable_or_refusing_is_one_clear_error(own_database, grafana, sync):
    create_tenant(own_database)
    grafana.state.admin = ("admin", "rotated")
    with pytest.raises(GrafanaSyncError, match="Unauthorized"):
        sync.run()
    grafana.close()
    with pytest.raises(GrafanaSyncError, match="grafana"):
        sync.run()


def test_dashboards_imported_are_the_committed_tenant_ones():
    uids = sorted(d["uid"] for d in tenant_dashboards())
    assert uids == ["wattfleet-savings", "wattfleet-site", "wattfleet-sites"]
    assert all(unique("x") not in d["title"] for d in tenant_dashboards())


def test_a_reset_password_reaches_the_tenants_datasource(own_database, grafana, sync):
    tenant = create_tenant(own_database)
    sync.run(only_tenant=tenant)
    org = grafana.state.org_by_name(org_name(slug_of(own_database, tenant)))
    first = grafana.state.datasources[org][TIMESCALE_UID]["secureJsonData"]["password"]
    sync.run(only_tenant=tenant, password="the-new-password")
    source = grafana.state.datasources[org][TIMESCALE_UID]
    assert first != "the-new-password"
    assert source["secureJsonData"]["password"] == "the-new-password"
    assert source["user"] == database_role_name(tenant)


def test_the_api_syncs_at_start_and_after_a_tenant_is_created(own_database, grafana, broker):
    settings = {
        "grafana_url": grafana.url,
        "grafana_user": grafana.state.admin[0],
        "grafana_password": grafana.state.admin[1],
        "grafana_sync_interval_s": 3600,
    }
    with api_client(own_database, broker, **settings) as api:
        wait_for(
            lambda: api.get("/metrics").text.count('grafana_sync_total{outcome="ok"} 1.0'),
            15,
            "the first sync",
        )
        admin = log_in(api, create_user(own_database, "admin", None))
        slug = unique("t")
        assert (
            api.post(
                "/tenants", json={"slug": slug, "name": "New"}, headers=admin.headers
            ).status_code
            == 201
        )
        wait_for(lambda: grafana.state.org_by_name(org_name(slug)), 15, "the tenant's org")
        org = grafana.state.org_by_name(org_name(slug))
        wait_for(
            lambda: len(grafana.state.dashboards.get(org, {})) == len(tenant_dashboards()),
            15,
            "its dashboards",
        )
        # Its zone changes: the organization shows the new one.
        tenant_id = next(
            t["id"] for t in api.get("/tenants", headers=admin.headers).json() if t["slug"] == slug
        )
        moved = api.patch(
            f"/tenants/{tenant_id}", json={"timezone": "Europe/Warsaw"}, headers=admin.headers
        )
        assert moved.status_code == 200
        wait_for(
            lambda: grafana.state.preferences.get(org, {}).get("timezone") == "Europe/Warsaw",
            15,
            "the organization's zone",
        )


def test_each_org_shows_its_tenants_time_zone(own_database, grafana, sync):
    db = own_database
    tenant = create_tenant(db)
    with db.connect() as conn:
        conn.execute("UPDATE tenants SET timezone = 'Europe/Warsaw' WHERE id = %s", (tenant,))
    sync.run(only_tenant=tenant)
    org = grafana.state.org_by_name(org_name(slug_of(db, tenant)))
    assert grafana.state.preferences[org]["timezone"] == "Europe/Warsaw"
    # Someone picks a theme in Grafana, and the tenant moves: the theme stays.
    grafana.state.preferences[org]["theme"] = "dark"
    with db.connect() as conn:
        conn.execute("UPDATE tenants SET timezone = 'America/Chicago' WHERE id = %s", (tenant,))
    report = sync.run(only_tenant=tenant)
    assert report.set_timezones == [f"{org_name(slug_of(db, tenant))}/America/Chicago"]
    assert grafana.state.preferences[org] == {
        **grafana.state.preferences[org],
        "timezone": "America/Chicago",
        "theme": "dark",
    }
    assert sync.run(only_tenant=tenant).set_timezones == []
