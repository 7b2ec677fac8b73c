"""The edge agent's footprint while publishing live, and its backlog replay rate.

    .venv/bin/python -m tests.benchmarks.edge_agent [--live-seconds 30] [--backlog 121000]

Real Mosquitto (repo config), the simulator, and a subscriber on the collectors' shared
subscription that counts samples. Live: the agent polls and publishes every second;
prints its CPU share and RSS. Replay: the buffer starts with a week of 5-second samples
(written straight into its SQLite file) and the agent sends them all; prints samples/s,
CPU and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from contract import topics
from edge.buffer import SCHEMA
from tests.benchmarks.ingest import cpu_seconds
from tests.support.agent import AgentProcess
from tests.support.fleet import Node, dynsec, mqtt_client, sample, unique
from tests.support.services import (
    REPO,
    Broker,
    free_port,
    service_env,
    stop_process,
    wait_for,
    wait_for_port,
)

UNIT = 1


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class SampleCounter:
    """Counts samples arriving for one node, single or batched."""

    def __init__(self, broker: Broker, node_id: str) -> None:
        self.count = 0
        self._lock = threading.Lock()
        self.client = mqtt_client(broker, "collector", broker.passwords["collector"])
        self.client.on_message = self._on_message
        self.client.subscribe(topics.shared_subscription("telemetry"), qos=1)

    def _on_message(self, _c: object, _u: object, msg: object) -> None:
        body = json.loads(msg.payload)  # type: ignore[attr-defined]
        with self._lock:
            self.count += len(body["samples"]) if "samples" in body else 1


def prefill(path: Path, node_id: str, samples: int) -> None:
    """A week of 5-second samples, as the agent would have buffered them."""
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    start = datetime.now(UTC) - timedelta(seconds=5 * samples)
    rows = []
    for seq in range(samples):
        ts = start + timedelta(seconds=5 * seq)
        rows.append(
            (seq, ts.isoformat(), json.dumps(sample(node_id, seq, ts), separators=(",", ":")))
        )
    db.executemany("INSERT INTO samples VALUES (?, ?, ?)", rows)
    db.execute("UPDATE counters SET value = ? WHERE name = 'next_seq'", (samples,))
    db.commit()
    db.close()


def measure(agent: AgentProcess, seconds: float) -> tuple[float, float]:
    """(CPU % of one core, peak RSS MB) over `seconds`."""
    pid = agent.proc.pid
    cpu0, t0, peak = cpu_seconds(pid), time.monotonic(), 0.0
    while time.monotonic() - t0 < seconds:
        peak = max(peak, rss_mb(pid))
        time.sleep(0.5)
    return (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0) * 100, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--live-seconds", type=float, default=30)
    parser.add_argument("--backlog", type=int, default=7 * 24 * 720)  # 5-s samples a week
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="wattfleet-edge-bench-"))
    workdir.chmod(0o755)
    broker = Broker(workdir / "broker").start()
    sim_port = free_port()
    simulator = subprocess.Popen(
        [sys.executable, "-m", "edge.simulator", "--port", str(sim_port), "--at", "12:00"],
        cwd=REPO,
        env=service_env(),
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_port(sim_port, 15, simulator)
        node = Node(unique("bench"), 0, "bench-password")
        with dynsec(broker) as admin:
            admin.add_node(node.id, node.password)
        counter = SampleCounter(broker, node.id)

        live_dir = workdir / "live"
        live_dir.mkdir()
        agent = AgentProcess(
            live_dir, broker, node, sim_port, UNIT, log_level="WARNING", poll_interval_s=1.0
        ).start()
        wait_for(lambda: counter.count >= 2, 30, "live samples")
        live_cpu, live_rss = measure(agent, args.live_seconds)
        stop_process(agent.proc)
        agent.release()

        replay_dir = workdir / "replay"
        replay_dir.mkdir()
        agent = AgentProcess(
            replay_dir, broker, node, sim_port, UNIT, log_level="WARNING", poll_interval_s=5.0
        )
        prefill(agent.buffer_path, node.id, args.backlog)
        before = counter.count
        started = time.monotonic()
        agent.start()
        cpu0 = None
        peak = 0.0
        while len(agent.buffered()) > 1:
            if cpu0 is None:
                cpu0 = cpu_seconds(agent.proc.pid)
            peak = max(peak, rss_mb(agent.proc.pid))
            if time.monotonic() - started > 600:
                raise RuntimeError("replay took more than 10 minutes")
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        replay_cpu = (cpu_seconds(agent.proc.pid) - (cpu0 or 0)) / elapsed * 100
        wait_for(lambda: counter.count - before >= args.backlog, 60, "every sample delivered")
        stop_process(agent.proc)
        agent.release()
    finally:
        stop_process(simulator)
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    print(
        f"live (1 sample/s, {args.live_seconds:g} s): CPU {live_cpu:.1f} % of a core, "
        f"RSS {live_rss:.0f} MB"
    )
    print(
        f"replay of {args.backlog} buffered samples: {elapsed:.1f} s, "
        f"{args.backlog / elapsed:,.0f} samples/s, CPU {replay_cpu:.0f} % of a core, "
        f"peak RSS {peak:.0f} MB (includes agent start-up)"
    )
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
