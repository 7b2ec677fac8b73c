"""Prometheus config, self-monitoring rules and their unit tests (`promtool`), and the
Alertmanager config (`amtool`), with Debian's binaries."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from tests.support.alerting import render_config
from tests.support.services import REPO, require_binary


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary(args[0]), *args[1:]], cwd=REPO, capture_output=True, text=True, timeout=60
    )


def test_prometheus_config_and_rules_check():
    result = run("promtool", "check", "config", "prometheus/prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout


def test_every_rule_has_a_passing_promtool_test():
    result = run("promtool", "test", "rules", "prometheus/tests/rules_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    rules = yaml.safe_load((REPO / "prometheus/rules/wattfleet.yml").read_text())
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    tests = yaml.safe_load((REPO / "prometheus/tests/rules_test.yml").read_text())
    tested = {a["alertname"] for t in tests["tests"] for a in t.get("alert_rule_test", [])}
    assert names == tested


def test_alertmanager_config_checks_with_its_templates(tmp_path):
    assert run("amtool", "check-config", "alertmanager/alertmanager.yml").returncode == 0
    # With the templates where the test can find them, amtool parses them too.
    rendered = tmp_path / "alertmanager.yml"
    rendered.write_text(yaml.safe_dump(render_config("http://127.0.0.1:1")))
    result = run("amtool", "check-config", str(rendered))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 templates" in result.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=NodeOffline", "severity=critical", "tenant=acme"], "oncall"),
        (
            ["alertname=NodeOffline", "severity=critical", "tenant=example-utility"],
            "example-utility-desk",
        ),
        (["alertname=ClockDrift", "severity=warning", "tenant=acme"], "fleet-email"),
        (["alertname=NodeBacklogStuck", "severity=warning", "tenant=acme"], "fleet-email"),
        (
            ["alertname=BacklogsStuckFleetWide", "severity=warning", "service=collector"],
            "oncall",
        ),
        (["alertname=CollectorDown", "severity=critical", "service=collector"], "oncall"),
        (["alertname=Watchdog", "severity=none", "service=prometheus"], "deadmans-switch"),
    ],
)
def test_alerts_route_by_tenant_and_severity(labels, receiver):
    result = run(
        "amtool",
        "config",
        "routes",
        "test",
        "--config.file=alertmanager/alertmanager.yml",
        *labels,
    )
    assert result.stdout.strip() == receiver
