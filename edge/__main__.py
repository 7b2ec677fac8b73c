"""`python -m edge --config PATH`: the Raspberry Pi agent, until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from contract.settings import ConfigError
from edge.agent import Agent
from edge.config import EdgeSettings


def main() -> int:
    parser = argparse.ArgumentParser(
        description="wattfleet edge agent: Modbus (SunSpec) in, MQTT out. Settings come from "
        "the YAML file (every key is documented in edge/config.example.yaml), overridden by "
        "WATTFLEET_EDGE_* environment variables."
    )
    parser.add_argument("--config", type=Path, required=True, help="YAML settings file")
    args = parser.parse_args()
    try:
        settings = EdgeSettings.from_file(args.config)
    except ConfigError as exc:
        print(f"edge: invalid settings: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    agent = Agent(settings, config_path=args.config)
    agent.run(stop)
    # 75 (EX_TEMPFAIL): asked to restart; the systemd unit starts the agent again.
    return 75 if agent.restart_requested else 0


if __name__ == "__main__":
    sys.exit(main())
