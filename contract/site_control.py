"""The two site-wide switches of remote control, as agent and hub both read them: the
safety lock and the dynamic strategy (docs/edge.md, "Safety lock" and "Dynamic
strategy").

The safety lock: while a site is locked the agent refuses every control command
(`contract.commands.COMMAND_KINDS`) and the hub queues none. It is held on the site
(`local`: the agent's `safety_lock` config key, or the local status page) or by an
admin through the hub (`remote`: a SAFETY_LOCK command); the site is locked while
either holds. The agent reports it in its heartbeat (`NodeStatus.safety_lock`).

The dynamic strategy: whether the site's coordinator may steer the battery, and with
which strategy; off, the coordinator must leave the inverter in its own
self-consumption mode. The agent reports it in its heartbeat (`NodeStatus.strategy`).
"""

from __future__ import annotations

from typing import Annotated, Literal, NotRequired

from pydantic import ConfigDict, StringConstraints, with_config
from typing_extensions import TypedDict

from contract.node_time import NodeTime
from contract.text import STORABLE

LockSource = Literal["local", "remote"]
# Who holds a lock: an admin's email, or where on the site it was set.
LockHolder = Annotated[str, StringConstraints(min_length=1, max_length=254), STORABLE]
LockReason = Annotated[str, StringConstraints(min_length=1, max_length=500), STORABLE]
# Who set a local lock, as the agent reports it.
LOCAL_BY_CONFIG = "site: config file (safety_lock)"
LOCAL_BY_PAGE = "site: status page"

# The strategies a coordinator may run when the dynamic strategy is on; the agent only
# hands the name on, each coordinator knows what it means.
StrategyName = Literal["time_of_use", "peak_shaving", "solar_first"]
# The one decision a coordinator may post while the dynamic strategy is off: the
# inverter's default (SET_MODE's SELF_CONSUMPTION writes the same).
SELF_CONSUMPTION_MODE = "SELF_CONSUMPTION"


# Like the rest of a status: keys a later agent adds are ignored.
@with_config(ConfigDict(extra="ignore"))
class SafetyLockStatus(TypedDict):
    """The lock as the agent reports it (heartbeat, status page, coordinator context).
    When locked: `source` "local" if the site holds it (whatever the hub also holds),
    else "remote"; `by`, `reason` and `since` are that holder's. `remote_command_id`:
    the last SAFETY_LOCK the agent applied (locked or not), so the hub can tell a
    report that already reflects its newest lock command from one that predates it."""

    locked: bool
    source: NotRequired[LockSource | None]
    by: NotRequired[LockHolder | None]
    reason: NotRequired[LockReason | None]
    since: NotRequired[NodeTime | None]
    remote_command_id: NotRequired[
        Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00]*$")] | None
    ]


@with_config(ConfigDict(extra="ignore"))
class StrategyStatus(TypedDict):
    """The dynamic strategy setting the agent runs with."""

    enabled: bool
    name: StrategyName
