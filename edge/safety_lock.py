"""The site's safety lock on the agent (contract/site_control.py, docs/edge.md).

Three holders, any one of which locks the site:
- the config file (`safety_lock: true`): only editing the file on the Pi lifts it;
- the local status page (a person on site, on the Pi itself): lifted there again;
- the hub (an admin's SAFETY_LOCK command): lifted by the hub's unlock, or on site.

The person on site has the last word: a local unlock lifts the page's lock and the
hub's (the hub learns it from the next heartbeat), while the hub's unlock lifts only
its own. The page's and the hub's locks are kept in `safety-lock.json` in the agent's
state dir (written atomically), so a restart (a crash, an update) never unlocks a site.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import AwareDatetime, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from contract.commands import CommandId, CommandType, SafetyLockParams
from contract.site_control import LOCAL_BY_CONFIG, LOCAL_BY_PAGE, LockHolder, LockReason
from edge.atomic_file import write_atomically

log = logging.getLogger(__name__)

STATE_NAME = "safety-lock.json"
CONFIG_REASON = "safety_lock: true in the agent's config file"


class _PageLock(TypedDict):
    reason: LockReason
    since: AwareDatetime | None


class _RemoteLock(TypedDict):
    issued_at: AwareDatetime
    locked: bool
    by: LockHolder
    reason: LockReason
    since: AwareDatetime
    command_id: CommandId


class _State(TypedDict, total=False):
    config_since: AwareDatetime | None
    page: _PageLock | None
    remote: _RemoteLock | None


# The state file's shape, checked when it is read (strictly: a datetime is an ISO
# string, as written); the state itself is kept as JSON, as read.
_STATE = TypeAdapter(_State)


class SafetyLockError(Exception):
    """A local unlock that cannot be done (the config file holds the lock), or a change
    that could not be written to disk."""


class SafetyLock:
    """Thread-safe: the command worker, the status page and the poll loop all read it."""

    def __init__(self, state_dir: Path, config_locked: bool, clock: Callable[[], datetime]) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / STATE_NAME
        self.clock = clock
        self._lock = threading.Lock()
        # Counts changes: the agent publishes a heartbeat when it moves.
        self.changes = 0
        self._state = self._read()
        # When the config key was first seen set: kept, so `since` survives restarts.
        if bool(config_locked) != bool(self._state.get("config_since")):
            self._state["config_since"] = clock().isoformat() if config_locked else None
            try:
                self._write()
            except SafetyLockError as exc:
                # The agent still starts and monitors; the lock holds in memory.
                log.error("%s", exc)

    def _read(self) -> dict[str, Any]:
        try:
            text = self.path.read_text()
            _STATE.validate_json(text, strict=True)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            # A lock must not vanish with a damaged file, nor with one of another shape
            # (ValidationError is a ValueError): locked until someone on site unlocks it
            # (and the file is written anew).
            why = _why(exc)
            log.error("unreadable %s, the site stays locked: %s", self.path, why)
            return {"page": {"reason": f"unreadable lock state: {why}"[:500], "since": None}}
        state: dict[str, Any] = json.loads(text)
        return state

    def _write(self) -> None:
        """Keeps the state; SafetyLockError when the file cannot be written (the change
        holds in memory, so a lock still locks until the agent restarts)."""
        self.changes += 1
        try:
            write_atomically(self.path, json.dumps(self._state))
        except OSError as exc:
            raise SafetyLockError(f"the lock state could not be kept: {exc}") from exc

    @property
    def locked(self) -> bool:
        return bool(self.status()["locked"])

    def status(self) -> dict[str, Any]:
        """The lock as reported (contract.site_control.SafetyLockStatus), JSON-ready."""
        with self._lock:
            state = self._state
            remote = state.get("remote") or {}
            command_id = remote.get("command_id")
            holder: tuple[str, Any, Any, Any]
            if state.get("config_since"):
                holder = ("local", LOCAL_BY_CONFIG, CONFIG_REASON, state["config_since"])
            elif state.get("page"):
                page = state["page"]
                holder = ("local", LOCAL_BY_PAGE, page.get("reason"), page.get("since"))
            elif remote.get("locked"):
                holder = ("remote", remote.get("by"), remote.get("reason"), remote.get("since"))
            else:
                return {"locked": False, "remote_command_id": command_id}
        source, by, reason, since = holder
        return {
            "locked": True,
            "source": source,
            "by": by,
            "reason": reason,
            "since": since,
            "remote_command_id": command_id,
        }

    def holder(self) -> str | None:
        """Who holds the lock and why (`source, by who: reason`), None when the site is
        not locked (one look at the lock: it may be lifted on the page meanwhile)."""
        status = self.status()
        if not status["locked"]:
            return None
        return f"{status['source']}, by {status['by']}: {status['reason']}"

    def refusal(self, command_type: CommandType) -> str | None:
        """The reason a control command is refused, None when the site is not locked."""
        holder = self.holder()
        if holder is None:
            return None
        return (
            f"the site is safety-locked ({holder}): {command_type.value} refused;"
            " read-only commands still work"
        )

    def lock_locally(self, reason: str) -> None:
        """The status page's lock (kept as first set if it is already on)."""
        with self._lock:
            if not self._state.get("page"):
                self._state["page"] = {"reason": reason, "since": self.clock().isoformat()}
                self._write()
        log.warning("safety lock set on site: %s", reason)

    def unlock_locally(self) -> None:
        """Lifts the page's lock and the hub's; SafetyLockError (nothing changed) while
        the config file holds the lock."""
        with self._lock:
            if self._state.get("config_since"):
                raise SafetyLockError(
                    "the config file holds the lock: set safety_lock: false there and"
                    " restart the agent"
                )
            remote = self._state.get("remote") or {}
            self._state["page"] = None
            if remote.get("locked"):
                self._state["remote"] = {**remote, "locked": False}
            self._write()
        log.warning("safety lock lifted on site (the hub's lock with it)")

    def apply_remote(self, command_id: str, issued_at: datetime, params: SafetyLockParams) -> str:
        """Takes the hub's lock or unlock; what it leaves in force, for the ack. One
        issued before the last applied (a retry that arrived late) changes nothing."""
        with self._lock:
            last = self._state.get("remote") or {}
            if last.get("issued_at") and issued_at < datetime.fromisoformat(last["issued_at"]):
                return f"ignored: the hub's lock command {last['command_id']} is newer"
            self._state["remote"] = {
                "issued_at": issued_at.isoformat(),
                "locked": params.locked,
                "by": params.requested_by,
                "reason": params.reason,
                "since": self.clock().isoformat(),
                "command_id": command_id,
            }
            self._write()
        status = self.status()
        if params.locked:
            return "locked by the hub"
        if status["locked"]:
            return f"the hub's lock lifted; the site still holds its own ({status['by']})"
        return "unlocked"


def _why(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        return f"{where}: {first['msg']}" if where else first["msg"]
    return str(exc)
