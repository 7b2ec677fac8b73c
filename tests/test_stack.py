"""The README's "bring the stack up" command runs and ingests (end to end)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.support.services import REPO, service_env

pytestmark = pytest.mark.e2e


def test_local_stack_ingests_simulated_sites():
    result = subprocess.run(
        [sys.executable, "-m", "tests.support.stack", "--sites", "3", "--duration", "16"],
        cwd=REPO,
        env=service_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "wattfleet stack is up" in result.stdout
    # The sites were enrolled through the control API, whose admin login is printed.
    assert re.search(
        r"API +http://127\.0\.0\.1:\d+/docs +admin admin@example\.com / \S+", result.stdout
    )
    figures = re.findall(
        r"ingest: (\d+) rows written, [\d.]+ rows/s, (\d+) dead letters", result.stdout
    )
    assert len(figures) >= 2, result.stdout
    rows, dead = map(int, figures[-1])
    assert rows >= 3 * 5  # three sites, one sample a second, for more than five seconds
    assert dead == 0
