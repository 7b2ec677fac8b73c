"""The site's dynamic strategy on the agent (contract/site_control.py, docs/edge.md).

The setting is the config's (`strategy_enabled`, `strategy`): it changes with a restart
(a config push, or the file edited on the Pi). Switched off, the inverter goes back to
its own self-consumption mode once: `strategy.json` in the agent's state dir remembers
the setting the inverter was last left under, so the return happens after the restart
that switched it off (and is tried again on every poll until the inverter takes it),
and not again on later restarts.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from contract.site_control import StrategyName
from edge.atomic_file import write_atomically

log = logging.getLogger(__name__)

STATE_NAME = "strategy.json"


class Strategy:
    def __init__(self, state_dir: Path, enabled: bool, name: StrategyName) -> None:
        self.path = state_dir / STATE_NAME
        self.enabled = enabled
        self.name = name
        # An agent that never ran with the strategy switch owes the return too: off
        # means self-consumption, whatever the inverter was left in before.
        self.owes_self_consumption = not enabled and self._last_enabled() is not False
        if enabled:
            self._remember()

    def status(self) -> dict[str, Any]:
        """As reported (contract.site_control.StrategyStatus)."""
        return {"enabled": self.enabled, "name": self.name}

    def _last_enabled(self) -> bool | None:
        try:
            last = json.loads(self.path.read_text()).get("enabled")
        except (OSError, ValueError, AttributeError):
            return None
        return last if isinstance(last, bool) else None

    def _remember(self) -> None:
        if self._last_enabled() is not self.enabled:
            try:
                write_atomically(self.path, json.dumps({"enabled": self.enabled}))
            except OSError as exc:
                # Not worth stopping the agent (and the site's monitoring) for: an
                # unremembered return is owed, and written, again after a restart. A
                # file left saying "off" that cannot be rewritten "on" would skip the
                # next return (a read-only disk, where the sample buffer fails too).
                log.error("the strategy setting could not be remembered: %s", exc)

    def returned_to_self_consumption(self) -> None:
        """The inverter took self-consumption: not owed again until switched on and off."""
        self.owes_self_consumption = False
        self._remember()
        log.info("dynamic strategy off: the inverter is back in self-consumption")
