"""`wattfleet-agent --config PATH [--state-dir DIR]` (or `python -m edge ...`): the
Raspberry Pi agent, until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from contract.process import configure_logging, stop_on_signals
from contract.settings import ConfigError
from edge import self_update
from edge.agent import Agent
from edge.config import EdgeSettings
from edge.config_push import ConfigPush, adopt_legacy_marker

log = logging.getLogger(__name__)

# EX_TEMPFAIL: asked to restart; the systemd unit starts the agent again.
RESTART_EXIT_STATUS = 75


def _roll_back(push: ConfigPush, problem: str) -> bool:
    """Rolls back a push this run could not even start with; False when none is pending."""
    marker = push.applying()
    if marker is None:
        return False
    push.roll_back(f"{problem} with config version {marker.get('version')}")
    return True


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
        help="where a pending config push or update is kept across restarts "
        "(default: the config file's folder); no config key can move it",
    )
    args = parser.parse_args()
    state_dir: Path = args.state_dir or args.config.parent
    push = ConfigPush(args.config, state_dir)
    try:
        settings = EdgeSettings.from_file(args.config)
    except ConfigError as exc:
        first_line = str(exc).splitlines()[0]
        if _roll_back(push, f"the agent could not load its config ({first_line})"):
            print(f"edge: invalid settings, rolled back: {exc}", file=sys.stderr)
            return RESTART_EXIT_STATUS
        print(f"edge: invalid settings: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    legacy_dir = settings.buffer_path.parent
    adopt_legacy_marker(push.marker_path, legacy_dir)
    adopt_legacy_marker(state_dir / self_update.MARKER_NAME, legacy_dir)
    try:
        agent = Agent(settings, config_path=args.config, state_dir=state_dir)
        agent.run(stop_on_signals())
    except Exception as exc:
        # Whatever stops a pushed config from running (a buffer path it cannot write, a
        # port in use) must not outlast the push: back to the previous file at once.
        if not _roll_back(push, f"the agent failed to start ({exc})"):
            raise
        log.exception("the agent failed with a pushed config: rolled back")
        return RESTART_EXIT_STATUS
    return RESTART_EXIT_STATUS if agent.restart_requested else 0


if __name__ == "__main__":
    sys.exit(main())
