"""Grafana matches the tenants table: one organization per tenant, named
`wattfleet-<slug>`, with a TimescaleDB datasource that logs in as the tenant's database
role, the tenant dashboards (grafana/dashboards/tenant/), the tenant's users as Viewers,
and the tenant's time zone as the organization's (its preferences: dashboards that do
not pin a zone of their own show local time). Organizations cannot be provisioned from
files, hence this sync, through `grafana-client`. It runs on a schedule in the control
API and after a tenant is created or its zone changes; it is idempotent and removes
what no longer exists: organizations of deleted tenants, and members who are no longer
the tenant's users.

The datasource password is the tenant role's: the sync sets a fresh one on the role when
it creates the datasource, and otherwise leaves it alone, unless given one (after an
admin reset it with POST /tenants/{id}/database-role).
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException
from grafana_client.model import PersonalPreferences
from sqlalchemy import Engine, text

from control_api.grafana_target import GrafanaTarget
from control_api.tenant_roles import database_role_name, reset_database_password
from grafana.datasources import TIMESCALE_TYPE, TIMESCALE_UID

log = logging.getLogger(__name__)

ORG_PREFIX = "wattfleet-"
TENANT_DASHBOARDS = Path(__file__).resolve().parents[1] / "grafana" / "dashboards" / "tenant"
# Keys Grafana manages itself; a dashboard is current when the rest matches.
_VOLATILE = {"id", "version"}


class GrafanaSyncError(Exception):
    """Grafana refused or could not be reached; the next run tries again."""


@dataclass
class SyncReport:
    created_orgs: list[str] = field(default_factory=list)
    deleted_orgs: list[str] = field(default_factory=list)
    created_datasources: list[str] = field(default_factory=list)
    updated_dashboards: list[str] = field(default_factory=list)
    added_members: list[str] = field(default_factory=list)
    removed_members: list[str] = field(default_factory=list)
    # "<org>/<zone>" for each organization whose time zone was set.
    set_timezones: list[str] = field(default_factory=list)


def org_name(slug: str) -> str:
    return ORG_PREFIX + slug


def tenant_dashboards(folder: Path = TENANT_DASHBOARDS) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


class TenantSync:
    def __init__(
        self, engine: Engine, target: GrafanaTarget, dashboards: list[dict[str, Any]] | None = None
    ) -> None:
        self.engine = engine
        self.target = target
        self.dashboards = dashboards if dashboards is not None else tenant_dashboards()

    def _api(self, org_id: int | None = None) -> GrafanaApi:
        url = urlparse(self.target.url)
        return GrafanaApi(
            auth=(self.target.user, self.target.password),
            host=url.hostname or "localhost",
            port=url.port,
            protocol=url.scheme or "http",
            url_path_prefix=url.path.strip("/"),
            organization_id=org_id,
            timeout=10.0,
        )

    def run(self, only_tenant: int | None = None, password: str | None = None) -> SyncReport:
        """Makes Grafana match the database (or just one tenant's organization, whose
        datasource gets `password` when given); raises GrafanaSyncError when Grafana
        fails."""
        try:
            return self._run(only_tenant, password)
        except GrafanaException as exc:
            raise GrafanaSyncError(f"grafana: {exc}") from exc
        except OSError as exc:  # connection refused, DNS, timeouts below the client
            raise GrafanaSyncError(f"grafana unreachable: {exc}") from exc

    def _run(self, only_tenant: int | None, password: str | None) -> SyncReport:
        report = SyncReport()
        with self.engine.connect() as conn:
            tenants = conn.execute(text("SELECT id, slug, timezone FROM tenants ORDER BY id")).all()
            tenant_users = conn.execute(
                text(
                    "SELECT email, tenant_id, disabled FROM users"
                    " WHERE tenant_id IS NOT NULL ORDER BY email"
                )
            ).all()
        users = [(email, t) for email, t, disabled in tenant_users if not disabled]
        # Disabled ones too: no way back in through another organization.
        tenant_emails = {email.lower() for email, _, _ in tenant_users}
        api = self._api()
        orgs = {o["name"]: int(o["id"]) for o in api.organizations.list_organization()}
        wanted = {org_name(slug): (tenant_id, zone) for tenant_id, slug, zone in tenants}
        for name, (tenant_id, zone) in wanted.items():
            if only_tenant is not None and tenant_id != only_tenant:
                continue
            if name not in orgs:
                orgs[name] = int(api.organization.create_organization({"name": name})["orgId"])
                report.created_orgs.append(name)
            emails = [email for email, t in users if t == tenant_id]
            self._sync_org(orgs[name], name, tenant_id, emails, report, password)
            self._sync_timezone(orgs[name], name, zone, report)
        if only_tenant is None:
            for name, org_id in orgs.items():
                if name.startswith(ORG_PREFIX) and name not in wanted:
                    api.organizations.delete_organization(org_id)
                    report.deleted_orgs.append(name)
        for name, org_id in orgs.items():
            if not name.startswith(ORG_PREFIX):
                self._remove_tenant_users(api, org_id, name, tenant_emails, report)
        return report

    def _remove_tenant_users(
        self, api: GrafanaApi, org_id: int, name: str, tenant_emails: set[str], report: SyncReport
    ) -> None:
        """A tenant's user belongs to its tenant's organization only: never to the admin
        one (whose datasource reads every tenant) nor any other. Grafana puts a user it
        creates without an organization into its auto-assign one (by default the admin
        organization, as a Viewer), which earlier syncs did."""
        for member in api.organizations.organization_user_list(org_id):
            if member["email"].lower() in tenant_emails:
                api.organizations.organization_user_delete(org_id, member["userId"])
                report.removed_members.append(f"{name}/{member['email']}")

    def _sync_org(
        self,
        org_id: int,
        name: str,
        tenant_id: int,
        emails: list[str],
        report: SyncReport,
        password: str | None,
    ) -> None:
        api = self._api(org_id)
        self._sync_datasource(api, name, tenant_id, report, password)
        for dashboard in self.dashboards:
            current = _get_or_none(lambda uid=dashboard["uid"]: api.dashboard.get_dashboard(uid))
            if current is None or _comparable(current["dashboard"]) != _comparable(dashboard):
                api.dashboard.update_dashboard(
                    {
                        "dashboard": {**dashboard, "id": None},
                        "overwrite": True,
                        "message": "wattfleet tenant sync",
                    }
                )
                report.updated_dashboards.append(f"{name}/{dashboard['uid']}")
        self._sync_members(api, org_id, name, emails, report)

    def _sync_datasource(
        self,
        api: GrafanaApi,
        name: str,
        tenant_id: int,
        report: SyncReport,
        password: str | None,
    ) -> None:
        wanted = {
            "name": "TimescaleDB",
            "uid": TIMESCALE_UID,
            "type": TIMESCALE_TYPE,
            "access": "proxy",
            "url": self.target.db_host,
            "user": database_role_name(tenant_id),
            "isDefault": True,
            "jsonData": {
                "database": self.target.db_name,
                "sslmode": self.target.db_sslmode,
                "timescaledb": True,
                "postgresVersion": 1500,
            },
        }
        existing = _get_or_none(lambda: api.datasource.get_datasource_by_uid(TIMESCALE_UID))
        if existing is None:
            if password is None:
                with self.engine.begin() as conn:
                    password = reset_database_password(conn, tenant_id).password
            secure = {"secureJsonData": {"password": password}}
            api.datasource.create_datasource({**wanted, **secure})
            report.created_datasources.append(name)
        elif password is not None:
            secure = {"secureJsonData": {"password": password}}
            api.datasource.update_datasource_by_uid(TIMESCALE_UID, {**existing, **wanted, **secure})
        elif any(existing.get(k) != v for k, v in wanted.items()):
            # Without secureJsonData, Grafana keeps the stored password.
            api.datasource.update_datasource_by_uid(TIMESCALE_UID, {**existing, **wanted})

    def _sync_timezone(self, org_id: int, name: str, zone: str, report: SyncReport) -> None:
        api = self._api(org_id)
        if api.organization.get_preferences().get("timezone") != zone:
            # PATCH: the organization's other preferences (theme, home dashboard) stay.
            api.organization.patch_preferences(PersonalPreferences(timezone=zone))
            report.set_timezones.append(f"{name}/{zone}")

    def _sync_members(
        self, api: GrafanaApi, org_id: int, name: str, emails: list[str], report: SyncReport
    ) -> None:
        members = {m["email"].lower(): m for m in api.organizations.organization_user_list(org_id)}
        for email in emails:
            member = members.get(email.lower())
            if member is None:
                if _get_or_none(lambda e=email: api.users.find_user(e)) is None:
                    # Their login comes from the operator's SSO, or a password reset. Made
                    # in the tenant's organization (with Grafana's default role, set to
                    # Viewer below), not in Grafana's auto-assign one.
                    created = api.admin.create_user(
                        {
                            "email": email,
                            "login": email,
                            "password": secrets.token_urlsafe(24),
                            "OrgId": org_id,
                        }
                    )
                    api.organizations.organization_user_update(org_id, created["id"], "Viewer")
                else:
                    api.organizations.organization_user_add(
                        org_id, {"loginOrEmail": email, "role": "Viewer"}
                    )
                report.added_members.append(f"{name}/{email}")
            elif member["role"] != "Viewer":
                api.organizations.organization_user_update(org_id, member["userId"], "Viewer")
        keep = {e.lower() for e in emails} | {self.target.user.lower()}
        for email, member in members.items():
            if email not in keep and member["login"].lower() not in keep:
                api.organizations.organization_user_delete(org_id, member["userId"])
                report.removed_members.append(f"{name}/{email}")


def _get_or_none(call: Any) -> Any:
    try:
        return call()
    except GrafanaClientError as exc:
        if exc.status_code == 404:
            return None
        raise


def _comparable(dashboard: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in dashboard.items() if k not in _VOLATILE}
