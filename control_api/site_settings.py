"""What the hub owns of a site's config: its time zone and its tariff timeline.

A site's zone is its node's own (`nodes.timezone`) or, when that is NULL, its tenant's.
Its effective tariff timeline is its own versions (`tariffs.node_id` = the node) from
the first of them on, and before that its tenant's (`node_id` NULL); each version is in
force from local midnight of its `valid_from` (in the site's zone) until the next one's.
The analytics SQL reads the `tariffs` table by the same rule.

The agent gets `{"timezone", "tariffs"}` merged into its config: the versions of its
timeline still in force or to come (`upcoming`), oldest first, at most
MAX_VERSIONS_IN_CONFIG of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Connection, text

from contract.node_config import MAX_REPORTED_CONFIG_BYTES
from contract.tariff import MAX_VERSIONS_IN_CONFIG, TariffVersion
from control_api.errors import ConflictError, InvalidError

# The hub's keys of a node's config: no operator pushes them, the hub fills them in.
HUB_KEYS = ("timezone", "tariffs")
# A node reports its whole config in at most MAX_REPORTED_CONFIG_BYTES; the hub's keys
# may take all but 4 KiB of it (the rest of a config is about 2 KiB; each push checks
# the node's whole config too: node_config.validate_pushed_config).
MAX_SETTINGS_BYTES = MAX_REPORTED_CONFIG_BYTES - 4 * 1024

_VERSIONS = TypeAdapter(list[TariffVersion])


@dataclass(frozen=True)
class StoredVersion:
    """A row of `tariffs`: a tenant's version (`source` "tenant") or a site's ("site")."""

    source: Literal["tenant", "site"]
    version: TariffVersion
    created_by: int | None
    created_at: datetime

    @property
    def valid_from(self) -> date:
        return self.version.valid_from

    def out(self) -> dict[str, Any]:
        return {
            **self.version.model_dump(mode="json"),
            "created_by": self.created_by,
            "created_at": self.created_at,
        }


@dataclass(frozen=True)
class Site:
    id: str
    tenant_id: int
    enabled: bool
    # The node's own zone (None: its tenant's) and the one in effect.
    own_timezone: str | None
    timezone: str


def local_today(zone: str) -> date:
    """Today's date in the zone (an IANA name the hub has validated)."""
    return datetime.now(ZoneInfo(zone)).date()


def tenant_timezone(conn: Connection, tenant_id: int) -> str:
    return str(
        conn.execute(
            text("SELECT timezone FROM tenants WHERE id = :id"), {"id": tenant_id}
        ).scalar_one()
    )


_SITES = """
SELECT n.id, n.tenant_id, n.enabled, n.timezone, coalesce(n.timezone, t.timezone)
FROM nodes n JOIN tenants t ON t.id = n.tenant_id
"""


def site(conn: Connection, node_id: str) -> Site:
    """An existing node as a site."""
    return Site(*conn.execute(text(_SITES + " WHERE n.id = :id"), {"id": node_id}).one())


def tenant_sites(conn: Connection, tenant_id: int) -> list[Site]:
    rows = conn.execute(text(_SITES + " WHERE n.tenant_id = :t ORDER BY n.id"), {"t": tenant_id})
    return [Site(*row) for row in rows]


def versions(conn: Connection, tenant_id: int, node_id: str | None = None) -> list[StoredVersion]:
    """The tenant's own versions (`node_id` None) or the site's, oldest first."""
    where = "node_id = :node" if node_id is not None else "tenant_id = :t AND node_id IS NULL"
    rows = conn.execute(
        text(
            "SELECT valid_from, tariff, created_by, created_at FROM tariffs"
            f" WHERE {where} ORDER BY valid_from"
        ),
        {"t": tenant_id, "node": node_id},
    )
    source: Literal["tenant", "site"] = "site" if node_id is not None else "tenant"
    return [
        StoredVersion(
            source,
            TariffVersion.model_validate({**tariff, "valid_from": valid_from}),
            created_by,
            created_at,
        )
        for valid_from, tariff, created_by, created_at in rows
    ]


def timeline(
    tenant_versions: list[StoredVersion], site_versions: list[StoredVersion]
) -> list[StoredVersion]:
    """The site's own versions once the first of them is in force, the tenant's before."""
    if not site_versions:
        return tenant_versions
    first = site_versions[0].valid_from
    return [v for v in tenant_versions if v.valid_from < first] + site_versions


def site_timeline(conn: Connection, node: Site) -> list[StoredVersion]:
    return timeline(versions(conn, node.tenant_id), versions(conn, node.tenant_id, node.id))


def upcoming(versions: list[TariffVersion], today: date) -> list[TariffVersion]:
    """The version in force on `today` and those after it (all, when none is yet)."""
    in_force = [i for i, v in enumerate(versions) if v.valid_from <= today]
    return versions[in_force[-1] :] if in_force else list(versions)


@dataclass(frozen=True)
class SiteSettings:
    """The hub's keys of a node's config, as of `today` in `timezone`."""

    timezone: str
    today: date
    tariffs: list[TariffVersion]

    @classmethod
    def of(cls, zone: str, timeline: list[StoredVersion], where: str) -> SiteSettings:
        """The settings a timeline gives in a zone now. ConflictError when more versions
        are in force or scheduled than a node's config holds, InvalidError when they
        would not fit in a config the node can report back; `where` names the timeline."""
        today = local_today(zone)
        tariffs = upcoming([v.version for v in timeline], today)
        if len(tariffs) > MAX_VERSIONS_IN_CONFIG:
            raise ConflictError(
                f"{where}: {len(tariffs)} tariff versions in force or scheduled; a node"
                f" holds at most {MAX_VERSIONS_IN_CONFIG} (delete a scheduled one first)"
            )
        settings = cls(zone, today, tariffs)
        size = len(json.dumps(settings.config()))
        if size > MAX_SETTINGS_BYTES:
            raise InvalidError(
                f"{where}: the tariffs in force or scheduled take {size} bytes of the node's"
                f" config, over {MAX_SETTINGS_BYTES}: fewer periods or scheduled versions"
            )
        return settings

    def config(self) -> dict[str, Any]:
        """The keys as merged into the node's config."""
        return {
            "timezone": self.timezone,
            "tariffs": [v.model_dump(mode="json") for v in self.tariffs],
        }

    def carried_by(self, config: dict[str, Any]) -> bool:
        """Whether a node running `config` prices and counts days as these settings do
        from today on (versions that ended before today do not matter)."""
        if config.get("timezone", "UTC") != self.timezone:
            return False
        try:
            held = _VERSIONS.validate_python(config.get("tariffs", []))
        except ValidationError:
            return False
        return upcoming(held, self.today) == self.tariffs


def of_site(conn: Connection, node: Site) -> SiteSettings:
    """The settings the site's node should run now (see SiteSettings.of for what raises)."""
    return SiteSettings.of(node.timezone, site_timeline(conn, node), f"site {node.id}")
