"""The edge agent installed from built wheels into a throwaway virtualenv, as on a Pi,
so SELF_UPDATE can replace it with pip without touching the repository's environment.

Wheels of the project are built at chosen versions from a copy of the sources
(`pip wheel`, no network). The virtualenv gets pip from the base interpreter
(`--system-site-packages`) and the project's dependencies from this environment's
site-packages through a `.pth` line, so installing a wheel needs no index: only the
folder of wheels (`--no-index --find-links`).
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.support.services import REPO

PACKAGES = ("contract", "collector", "control_api", "edge", "timescale", "grafana")


def build_wheel(
    out: Path, version: str, work: Path, change: Callable[[Path], None] | None = None
) -> Path:
    """A wheel of the project at `version`, optionally with `change` made to the copy."""
    src = work / f"src-{version}"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for package in PACKAGES:
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    pyproject = src / "pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(text.replace('version = "0.1.0"', f'version = "{version}"', 1))
    if change is not None:
        change(src)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    [wheel] = out.glob(f"wattfleet-{version}-*.whl")
    return wheel


@dataclass
class InstalledAgent:
    root: Path
    wheels: Path

    @property
    def python(self) -> Path:
        return self.root / "venv" / "bin" / "python"

    def create(self, version: str) -> InstalledAgent:
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run(
            [
                base,
                "-m",
                "venv",
                "--system-site-packages",
                "--without-pip",
                str(self.root / "venv"),
            ],
            check=True,
        )
        [venv_site] = (self.root / "venv" / "lib").glob("python3*/site-packages")
        # The project's dependencies, from this environment (appended to sys.path after
        # the venv's own site-packages, so the installed wheel wins over anything here).
        (venv_site / "wattfleet-test-deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
        # --ignore-installed: this environment's own (editable) wattfleet is visible
        # through the .pth line and would otherwise count as installed already.
        subprocess.run(
            [
                str(self.python),
                "-m",
                "pip",
                "install",
                "-q",
                "--no-index",
                "--find-links",
                str(self.wheels),
                "--ignore-installed",
                "--no-deps",
                f"wattfleet=={version}",
            ],
            check=True,
            capture_output=True,
        )
        return self

    def env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if not k.startswith(("WATTFLEET_", "PYTHON"))}

    def version(self) -> str:
        result = subprocess.run(
            [
                str(self.python),
                "-c",
                "import importlib.metadata as m; print(m.version('wattfleet'))",
            ],
            cwd=self.root,
            # As the agent runs: a PYTHONPATH naming a checkout would find its metadata.
            env=self.env(),
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stdout.strip()
