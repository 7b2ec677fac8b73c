"""Tariff versions: a tenant's (for its sites) and a site's own, set by admins and read by
the tenant's users, under rules that keep a price change from rewriting history:

- a new version starts today or later in the zone of the tariff (the tenant's zone for
  the tenant's, the site's zone for the site's own);
- a version of a `valid_from` that exists is not replaced;
- a version in force already (its `valid_from` today or earlier) is not deleted;

unless the request says `backdate` (audited as such). Each version is stored as the
contract's Tariff (`tariff`, jsonb) beside its price grids (contract/tariff.py). Every
change is pushed to the nodes whose sites it concerns (control_api/site_push.py), in
the same audited transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError

from contract.tariff import TariffVersion
from control_api import site_settings, tenants
from control_api.audit import RecordChange
from control_api.auth import Principal
from control_api.errors import ConflictError, NotFoundError
from control_api.site_settings import Site, SiteSettings, StoredVersion

if TYPE_CHECKING:  # site_push issues commands, whose rules import the nodes'
    from control_api.site_push import Pushes, SitePusher

BACKDATE = "send backdate=true to do it anyway (audited)"


@dataclass(frozen=True)
class Scope:
    """Whose versions: a tenant's (`node_id` None) or one site's own."""

    tenant_id: int
    node_id: str | None = None

    @property
    def name(self) -> str:
        return f"site {self.node_id}" if self.node_id else f"tenant {self.tenant_id}"

    def timezone(self, conn: Connection) -> str:
        if self.node_id is None:
            return site_settings.tenant_timezone(conn, self.tenant_id)
        return site_settings.site(conn, self.node_id).timezone

    def versions(self, conn: Connection) -> list[StoredVersion]:
        return site_settings.versions(conn, self.tenant_id, self.node_id)

    def timeline(self, conn: Connection) -> list[StoredVersion]:
        """The versions that price its days: a site's with its tenant's before them."""
        if self.node_id is None:
            return self.versions(conn)
        return site_settings.site_timeline(conn, site_settings.site(conn, self.node_id))

    def sites(self, conn: Connection) -> list[Site]:
        if self.node_id is None:
            return site_settings.tenant_sites(conn, self.tenant_id)
        return [site_settings.site(conn, self.node_id)]

    def row(self, conn: Connection, valid_from: date) -> int | None:
        """The id of its version from `valid_from`, if there is one."""
        where = "node_id = :node" if self.node_id else "tenant_id = :t AND node_id IS NULL"
        found = conn.execute(
            text(f"SELECT id FROM tariffs WHERE {where} AND valid_from = :day"),
            {"t": self.tenant_id, "node": self.node_id, "day": valid_from},
        ).scalar()
        return int(found) if found is not None else None


def tenant_scope(conn: Connection, user: Principal, tenant_id: int) -> Scope:
    """The tenant's versions, if the caller may see the tenant (NotFoundError or
    NotVisibleError otherwise)."""
    tenants.get(conn, user, tenant_id)
    return Scope(tenant_id)


def listed(conn: Connection, scope: Scope) -> list[dict[str, Any]]:
    """Its versions, oldest first."""
    return [v.out() for v in scope.versions(conn)]


def add(
    conn: Connection,
    scope: Scope,
    version: TariffVersion,
    backdate: bool,
    record: RecordChange,
    pusher: SitePusher,
) -> dict[str, Any]:
    """Stores the version and pushes it to the nodes concerned; the stored version, whether
    it replaced one, and the pushes. ConflictError for a version before today or one
    replacing another without `backdate`, or when the sites' nodes could not hold the
    versions in force and scheduled (also InvalidError: see SiteSettings.of)."""
    today = site_settings.local_today(scope.timezone(conn))
    if version.valid_from < today and not backdate:
        raise ConflictError(
            f"valid_from {version.valid_from} is before today ({today} in {scope.name}'s"
            f" zone): it would reprice days already recorded; {BACKDATE}"
        )
    existing = scope.row(conn, version.valid_from)
    if existing is not None and not backdate:
        raise ConflictError(
            f"{scope.name} has a version from {version.valid_from}; to replace it, {BACKDATE}"
        )
    if existing is not None:
        conn.execute(text("DELETE FROM tariffs WHERE id = :id"), {"id": existing})
    tariff = version.model_dump(mode="json", exclude={"valid_from"})
    try:
        conn.execute(
            text(
                """
                INSERT INTO tariffs (tenant_id, node_id, valid_from, currency, tariff,
                    import_prices, export_prices, import_periods, created_by)
                VALUES (:tenant, :node, :day, :currency, CAST(:tariff AS jsonb),
                    CAST(:import_prices AS double precision[]),
                    CAST(:export_prices AS double precision[]),
                    CAST(:import_periods AS text[]), :by)
                """
            ),
            {
                "tenant": scope.tenant_id,
                "node": scope.node_id,
                "day": version.valid_from,
                "currency": version.currency,
                "tariff": json.dumps(tariff),
                "import_prices": version.import_grid(),
                "export_prices": version.export_grid(),
                "import_periods": version.import_period_names(),
                "by": pusher.issued_by,
            },
        )
    except IntegrityError as exc:
        conn.rollback()
        raise ConflictError("a concurrent change set the same version; retry") from exc
    pushes = _checked_pushes(conn, scope, pusher)
    params = {"valid_from": version.valid_from.isoformat(), "tariff": tariff}
    record(
        conn,
        {
            **params,
            "backdate": backdate,
            "replaced": existing is not None,
            "config_pushes": pushes.audit(),
        },
    )
    [stored] = [v for v in scope.versions(conn) if v.valid_from == version.valid_from]
    conn.commit()
    published = pusher.publish(conn, pushes)
    return {
        **stored.out(),
        "replaced": existing is not None,
        "config_pushes": published.out(),
    }


def delete(
    conn: Connection,
    scope: Scope,
    valid_from: date,
    backdate: bool,
    record: RecordChange,
    pusher: SitePusher,
) -> dict[str, Any]:
    """Deletes the version and pushes the change to the nodes concerned. NotFoundError
    when there is no such version, ConflictError for one in force already without
    `backdate`."""
    existing = scope.row(conn, valid_from)
    if existing is None:
        raise NotFoundError(f"{scope.name} has no tariff version from {valid_from}")
    today = site_settings.local_today(scope.timezone(conn))
    if valid_from <= today and not backdate:
        raise ConflictError(
            f"the version from {valid_from} has been in force (today is {today} in"
            f" {scope.name}'s zone): deleting it would reprice days already recorded;"
            f" {BACKDATE}"
        )
    conn.execute(text("DELETE FROM tariffs WHERE id = :id"), {"id": existing})
    pushes = _checked_pushes(conn, scope, pusher)
    record(
        conn,
        {
            "valid_from": valid_from.isoformat(),
            "backdate": backdate,
            "config_pushes": pushes.audit(),
        },
    )
    conn.commit()
    return {"valid_from": valid_from, "config_pushes": pusher.publish(conn, pushes).out()}


def _checked_pushes(conn: Connection, scope: Scope, pusher: SitePusher) -> Pushes:
    """The pushes of the scope's new versions to its sites' nodes (staged), once the
    scope's own timeline is one a node can hold (raises like SiteSettings.of)."""
    SiteSettings.of(scope.timezone(conn), scope.timeline(conn), scope.name)
    return pusher.stage(conn, scope.sites(conn))


def effective(conn: Connection, node_id: str) -> dict[str, Any]:
    """The site's timeline in its zone: which version prices which local days."""
    site = site_settings.site(conn, node_id)
    today = site_settings.local_today(site.timezone)
    timeline = site_settings.site_timeline(conn, site)
    # Each version lasts until the next one starts; the last, until further notice.
    ends: list[date | None] = [v.valid_from for v in timeline[1:]] + ([None] if timeline else [])
    return {
        "node_id": node_id,
        "timezone": site.timezone,
        "today": today,
        "versions": [
            {
                **v.version.model_dump(mode="json"),
                "source": v.source,
                "valid_until": until,
                "in_force": v.valid_from <= today and (until is None or today < until),
            }
            for v, until in zip(timeline, ends, strict=True)
        ],
    }
