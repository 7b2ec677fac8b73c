"""`wattfleet-agent --config PATH` (or `python -m edge --config PATH`): the Raspberry Pi
agent, until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from contract.process import configure_logging, stop_on_signals
from contract.settings import ConfigError
from edge.agent import Agent
from edge.config import EdgeSettings


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="wattfleet-agent",
        description="wattfleet edge agent: Modbus (SunSpec) in, MQTT out. Settings come from "
        "the YAML file (every key is documented in edge/config.example.yaml), overridden by "
        "WATTFLEET_EDGE_* environment variables.",
    )
    parser.add_argument("--config", type=Path, required=True, help="YAML settings file")
    args = parser.parse_args()
    try:
        settings = EdgeSettings.from_file(args.config)
    except ConfigError as exc:
        print(f"edge: invalid settings: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    agent = Agent(settings, config_path=args.config)
    agent.run(stop_on_signals())
    # 75 (EX_TEMPFAIL): asked to restart; the systemd unit starts the agent again.
    return 75 if agent.restart_requested else 0


if __name__ == "__main__":
    sys.exit(main())
