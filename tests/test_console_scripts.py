"""The console scripts of pyproject.toml: each is installed and answers `--help`, and the
two a Pi runs import nothing of the hub (a base install has none of it)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from tests.support.services import REPO, service_env

# Top-level modules that only the hub has: its own packages and the `hub` extra's.
HUB_MODULES = {
    "collector",
    "control_api",
    "timescale",
    "psycopg",
    "psycopg_pool",
    "sqlalchemy",
    "alembic",
    "fastapi",
    "starlette",
    "uvicorn",
    "apscheduler",
    "argon2",
    "jwt",
    "pyotp",
    "email_validator",
    "limits",
    "grafana_client",
}


def _scripts() -> dict[str, str]:
    scripts: dict[str, str] = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "scripts"
    ]
    return scripts


def test_every_console_script_is_installed_and_answers_help():
    assert set(_scripts()) == {
        "wattfleet",
        "wattfleet-agent",
        "wattfleet-simulator",
        "wattfleet-collector",
        "wattfleet-api",
    }
    for name in _scripts():
        script = Path(sys.executable).parent / name
        result = subprocess.run(
            [str(script), "--help"], env=service_env(), capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"usage: {name} "), result.stdout


def test_the_pi_commands_import_nothing_of_the_hub():
    modules = [
        _scripts()[name].split(":")[0] for name in ("wattfleet-agent", "wattfleet-simulator")
    ]
    code = (
        f"import sys, {', '.join(modules)}; "
        "print(' '.join(sorted({name.split('.')[0] for name in sys.modules})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=service_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    imported = set(result.stdout.split())
    assert "edge" in imported
    assert not imported & HUB_MODULES
