"""Bringing nodes' configs up to the hub's site settings (time zone and tariffs:
control_api/site_settings.py) with CONFIG_PUSH.

Whenever a tenant's or a site's tariffs or zone change (and when a node moves to another
tenant), each node concerned gets a push of its current config (`node_config.current`:
what it reported, else what was last pushed, as PATCH /nodes/{id}/config merges on)
with `{"timezone", "tariffs"}` merged in. The pushes are stored in the transaction of the
change and audited with it, then published once it is committed. A node is skipped, with
the reason in the answer, when:

- it is disabled, or the hub knows no config of it yet (never reported, never pushed):
  it gets the settings when it next reports its config (below);
- its config already carries the settings (from today on: versions that have ended
  do not count);
- the site is safety-locked (control_api/safety_lock.py): a push is a control command
  it would refuse; the agent reports its config again when the lock is lifted;
- the newest push to it carries them and has not expired: it is on its way, or it ended
  (a failed one is not repeated by itself: PATCH /nodes/{id}/config `{}` pushes again).

Every config report a node sends (at each connect and after each confirmed push) is
checked the same way (`ConfigIntake`), so a node enrolled after the change, one that was
offline past its push's deadline, or one re-enabled, gets the settings then.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, text

from contract.commands import CommandType, ConfigPushParams
from control_api import commands, node_config, safety_lock
from control_api.errors import NotFoundError
from control_api.site_settings import Site, SiteSettings, of_site

NO_CONFIG = "no config known yet: it gets them once it reports its config"
DISABLED = "disabled: it gets them once enabled and reporting its config"
UP_TO_DATE = "its config carries them already"
LOCKED = "safety-locked: it gets them when it next reports its config once unlocked"


@dataclass(frozen=True)
class Pushed:
    node_id: str
    command_id: str
    version: int
    state: str = "pending"


@dataclass(frozen=True)
class Skipped:
    node_id: str
    reason: str


@dataclass
class Pushes:
    pushed: list[Pushed] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def audit(self) -> dict[str, Any]:
        """For the change's audit row: which node got which command, and who none."""
        return {
            "pushed": [{"node_id": p.node_id, "command_id": p.command_id} for p in self.pushed],
            "skipped": [{"node_id": s.node_id, "reason": s.reason} for s in self.skipped],
        }

    def out(self) -> dict[str, Any]:
        return {
            "pushed": [vars(p) for p in self.pushed],
            "skipped": [vars(s) for s in self.skipped],
        }


@dataclass(frozen=True)
class SitePusher:
    """Stores and publishes site-settings pushes as `issued_by` (None: the hub itself);
    `publish_command(conn, command_id)` publishes a stored command (the dispatcher's)."""

    ttl: timedelta
    publish_command: Callable[[Connection, str], bool]
    issued_by: int | None = None

    def stage(self, conn: Connection, sites: list[Site]) -> Pushes:
        """Stores a push for each site whose node needs one (the caller's transaction;
        nothing is published). Raises what SiteSettings.of raises for a site's settings
        a node cannot take, and NodeConfigError (naming the site) when a node's config
        with them would not be one it accepts and can report back."""
        pushes = Pushes()
        for site in sites:
            planned = _plan(conn, site, of_site(conn, site))
            if isinstance(planned, str):
                pushes.skipped.append(Skipped(site.id, planned))
            else:
                pushes.pushed.append(self._store(conn, site, planned))
        return pushes

    def publish(self, conn: Connection, pushes: Pushes) -> Pushes:
        """Publishes the staged pushes once committed (`conn` with no transaction open);
        those the broker did not take stay `pending` for the dispatcher's retries."""
        return Pushes(
            [
                Pushed(
                    p.node_id,
                    p.command_id,
                    p.version,
                    _state(self.publish_command(conn, p.command_id)),
                )
                for p in pushes.pushed
            ],
            pushes.skipped,
        )

    def _store(self, conn: Connection, site: Site, config: dict[str, Any]) -> Pushed:
        version = node_config.next_version(conn, site.id)
        params = ConfigPushParams(config=config, version=version).model_dump(mode="json")
        command = commands.new_command(
            site.id, site.tenant_id, CommandType.CONFIG_PUSH, params, self.ttl
        )
        # Queued: an offline node finds it in its broker session when it reconnects.
        commands.insert(conn, command, self.issued_by, None, queued=True)
        node_config.insert(conn, site.id, version, config, command.id, self.issued_by)
        return Pushed(site.id, command.id, version)


def _state(sent: bool) -> str:
    return "sent" if sent else "pending"


def _plan(conn: Connection, site: Site, settings: SiteSettings) -> dict[str, Any] | str:
    """The config to push to the site's node, or why none is pushed."""
    if not site.enabled:
        return DISABLED
    try:
        current = node_config.current(conn, site.id)["config"]
    except NotFoundError:
        return NO_CONFIG
    if settings.carried_by(current):
        return UP_TO_DATE
    if safety_lock.view(conn, site.id).locked:
        return LOCKED
    last = conn.execute(
        text(
            "SELECT c.id, c.state, v.config FROM node_configs v"
            " JOIN commands c ON c.id = v.command_id"
            " WHERE v.node_id = :id ORDER BY v.version DESC LIMIT 1"
        ),
        {"id": site.id},
    ).first()
    if last is not None and last.state != "expired" and settings.carried_by(last.config):
        return f"the newest push ({last.id}) carries them and is {last.state}"
    try:
        return node_config.validate_pushed_config(
            site.id, node_config.merge_patch(current, settings.config())
        )
    except node_config.NodeConfigError as exc:
        raise node_config.NodeConfigError(f"site {site.id}: {exc}") from exc
