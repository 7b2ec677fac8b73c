"""`wattfleet-agent --config PATH [--state-dir DIR]` (or `python -m edge ...`): the
Raspberry Pi agent, until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from contract.process import configure_logging, stop_on_signals
from contract.settings import ConfigError
from edge.agent import Agent
from edge.config import EdgeSettings
from edge.config_push import ConfigPush, adopt_legacy_marker
from edge.self_update import SelfUpdate

log = logging.getLogger(__name__)

# EX_TEMPFAIL: asked to restart; the systemd unit starts the agent again.
RESTART_EXIT_STATUS = 75


def choose_state_dir(given: Path | None, config_path: Path, environ: Mapping[str, str]) -> Path:
    """--state-dir, else systemd's StateDirectory= (a unit installed before --state-dir
    existed still sets it), else the config file's folder."""
    systemd_state = environ.get("STATE_DIRECTORY", "").split(":")[0]
    return given or Path(systemd_state or config_path.parent)


def _roll_back(push: ConfigPush, update: SelfUpdate | None, problem: str) -> bool:
    """Rolls back a push or update this run could not even start with; False when none
    is pending."""
    rolled = False
    if (pushed := push.applying()) is not None:
        push.roll_back(f"{problem} with config version {pushed.get('version')}")
        rolled = True
    if update is not None and (updated := update.applying()) is not None:
        update.roll_back(f"{problem} with version {updated.get('to')}")
        rolled = True
    return rolled


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="wattfleet-agent",
        description="wattfleet edge agent: Modbus (SunSpec) in, MQTT out. Settings come from "
        "the YAML file (every key is documented in edge/config.example.yaml), overridden by "
        "WATTFLEET_EDGE_* environment variables.",
    )
    parser.add_argument("--config", type=Path, required=True, help="YAML settings file")
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="where a pending config push or update is kept across restarts (default: "
        "$STATE_DIRECTORY, which systemd's StateDirectory= sets, else the config file's "
        "folder); no config key can move it",
    )
    args = parser.parse_args()
    state_dir = choose_state_dir(args.state_dir, args.config, os.environ)
    push = ConfigPush(args.config, state_dir)
    try:
        settings = EdgeSettings.from_file(args.config)
    except ConfigError as exc:
        first_line = str(exc).splitlines()[0]
        # Without settings there is no index to reinstall from: an update stays pending.
        if _roll_back(push, None, f"the agent could not load its config ({first_line})"):
            print(f"edge: invalid settings, rolled back: {exc}", file=sys.stderr)
            return RESTART_EXIT_STATUS
        print(f"edge: invalid settings: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    legacy_dir = settings.buffer_path.parent
    update = SelfUpdate(
        state_dir,
        settings.update_index_url,
        settings.update_find_links,
        settings.update_timeout_s,
    )
    for marker_path in (push.marker_path, update.marker_path):
        try:
            adopt_legacy_marker(marker_path, legacy_dir)
        except OSError as exc:  # the agent must run all the same
            log.error("cannot move %s to %s: %s", marker_path.name, state_dir, exc)
    try:
        agent = Agent(settings, config_path=args.config, state_dir=state_dir)
        agent.run(stop_on_signals())
    except Exception as exc:
        # Whatever stops a pushed config or a new version from running (a buffer path
        # it cannot write, a port in use, a broken release) must not outlast the push:
        # back to the previous file or version at once.
        if not _roll_back(push, update, f"the agent failed to start ({exc})"):
            raise
        log.exception("the agent failed with a pushed config or version: rolled back")
        return RESTART_EXIT_STATUS
    return RESTART_EXIT_STATUS if agent.restart_requested else 0


if __name__ == "__main__":
    sys.exit(main())
