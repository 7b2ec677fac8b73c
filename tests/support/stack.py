"""`python -m tests.support.stack`: the hub on this machine, for trying it out.

Starts what exists so far, each as a real process on a free port: TimescaleDB (the
embedded test server unless WATTFLEET_DATABASE_URL names one), migrations, Mosquitto
with the repo's config, one collector, the control API with a fresh admin account, and
simulated sites enrolled through the API: for each, the SunSpec simulator
(`python -m edge.simulator`) and a real edge agent (`python -m edge`) with the broker
account and command key the API issued. Prints where to look and live ingest figures
until Ctrl-C (or --duration seconds), then stops everything.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.support.agent import AgentProcess
from tests.support.control_api import ApiProcess
from tests.support.fleet import Node, scrape, unique
from tests.support.services import (
    REPO,
    Broker,
    collector_env,
    database_from_env,
    free_port,
    migrate,
    service_env,
    start_module,
    stop_process,
    wait_for_port,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=5, help="simulated sites (default 5)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--duration", type=float, default=0, help="stop after N s (0: Ctrl-C)")
    args = parser.parse_args()

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    workdir = Path(tempfile.mkdtemp(prefix="wattfleet-stack-"))
    workdir.chmod(0o755)
    db = database_from_env("WATTFLEET_DATABASE_URL")
    broker = Broker(workdir / "broker")
    collector = None
    api = None
    simulators: list[subprocess.Popen[bytes]] = []
    agents: list[AgentProcess] = []
    try:
        migrate(db)
        broker.start()
        metrics_port = free_port()
        collector = start_module(
            "collector",
            collector_env(db, broker, "collector-demo", metrics_port),
            workdir / "collector.log",
        )
        wait_for_port(metrics_port, 20, collector)
        api = ApiProcess(db, broker, workdir / "api.log").start()
        admin_email, admin_password = "admin@example.com", secrets.token_urlsafe(12)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "control_api",
                "create-admin",
                "--email",
                admin_email,
                "--password-stdin",
            ],
            input=admin_password + "\n",
            env=api.env,
            cwd=REPO,
            check=True,
            capture_output=True,
            text=True,
        )
        sites, node_secrets = enroll_sites(api, admin_email, admin_password, args.sites)
        for i, site in enumerate(sites):
            port = free_port()
            simulators.append(
                subprocess.Popen(
                    [sys.executable, "-m", "edge.simulator", "--port", str(port), "--seed", str(i)],
                    cwd=REPO,
                    env=service_env(),
                    stdout=subprocess.DEVNULL,
                )
            )
            wait_for_port(port, 15, simulators[-1])
            site_dir = workdir / site.id
            site_dir.mkdir()
            agents.append(
                AgentProcess(
                    site_dir,
                    broker,
                    site,
                    port,
                    1,
                    via_proxy=False,
                    node_secret=node_secrets[site.id],
                    poll_interval_s=args.interval,
                    log_level="WARNING",
                ).start()
            )
        status_pages = ", ".join(
            f"http://127.0.0.1:{a.settings['status_port']}/" for a in agents[:2]
        ) + (" ..." if len(agents) > 2 else "")
        print(
            f"""wattfleet stack is up
  database   {db.url}{"  (embedded TimescaleDB)" if db.embedded else ""}
  broker     mqtt://127.0.0.1:{broker.port}  (dev-only accounts, fresh each run)
             admin / {broker.passwords["admin"]}   collector / {broker.passwords["collector"]}
             site {sites[0].id} / {sites[0].password}
  collector  metrics http://127.0.0.1:{metrics_port}/metrics  log {workdir / "collector.log"}
  API        {api.url}/docs  admin {admin_email} / {admin_password}
  sites      {args.sites} simulated inverters with edge agents, a sample each every
             {args.interval:g} s; status pages {status_pages}
Ctrl-C stops everything.""",
            flush=True,
        )
        started = time.monotonic()
        last_written, last_t = 0.0, started
        while not stop.wait(5):
            m = scrape(metrics_port)
            written = m.get("wattfleet_collector_samples_written_total", 0.0)
            dead = sum(
                v for k, v in m.items() if k.startswith("wattfleet_collector_dead_letters_total")
            )
            now = time.monotonic()
            rate = (written - last_written) / (now - last_t)
            last_written, last_t = written, now
            queued = int(m.get("wattfleet_collector_queue_messages", 0))
            print(
                f"ingest: {int(written)} rows written, {rate:.1f} rows/s, "
                f"{int(dead)} dead letters, queue {queued}",
                flush=True,
            )
            if args.duration and now - started >= args.duration:
                break
    finally:
        for agent in agents:
            stop_process(agent.proc)
        for simulator in simulators:
            stop_process(simulator)
        if collector is not None:
            stop_process(collector)
        if api is not None and api.proc is not None:
            api.stop()
        broker.stop()
        db.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def enroll_sites(
    api: ApiProcess, email: str, password: str, count: int
) -> tuple[list[Node], dict[str, str]]:
    """A demo tenant and `count` nodes enrolled through the API, as an admin would."""
    with api.client() as client:
        token = client.post("/auth/login", json={"email": email, "password": password})
        client.headers["Authorization"] = (
            "Bearer " + token.raise_for_status().json()["access_token"]
        )
        tenant = client.post("/tenants", json={"slug": unique("demo"), "name": "Demo"})
        tenant_id = tenant.raise_for_status().json()["id"]
        nodes, node_secrets = [], {}
        for _ in range(count):
            enrolled = client.post("/nodes", json={"id": unique("site"), "tenant_id": tenant_id})
            issued = enrolled.raise_for_status().json()
            nodes.append(Node(issued["node_id"], tenant_id, issued["mqtt_password"]))
            node_secrets[issued["node_id"]] = issued["node_secret"]
    return nodes, node_secrets


if __name__ == "__main__":
    main()
