"""The shell blocks of the operator's docs, and a shell that runs them as an operator
types them.

A block is a fenced ```sh block whose first line is `# doc: <id>`; its variables
(`$API`, `$TOKEN`, `$NODE`, ...) are described at the top of each doc and filled in by
the test from the services it started."""

from __future__ import annotations

import os
import re
import subprocess
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.services import REPO

DOCS = (
    REPO / "docs" / "runbook.md",
    REPO / "docs" / "admin-guide.md",
    REPO / "docs" / "upgrade.md",
)
# A fence may be indented (a block inside a list item); its body is dedented.
FENCE = re.compile(r"^[ \t]*```(\w*)[^\n]*\n(.*?)^[ \t]*```", re.MULTILINE | re.DOTALL)
MARKER = re.compile(r"^# doc: ([a-z0-9][a-z0-9-]*)$")
# The variables a block may set for the blocks after it (`TOKEN=$(...)`), carried over
# as an operator's shell would keep them.
CARRIED = (
    "TOKEN",
    "TENANT",
    "USER_ID",
    "CMD",
    "WAVE",
    "TOTP_SECRET",
)


@dataclass(frozen=True)
class Block:
    doc: str
    id: str | None
    language: str
    text: str
    line: int


def blocks(paths: tuple[Path, ...] = DOCS) -> list[Block]:
    """Every fenced block of the docs (shell or not), in order."""
    found = []
    for path in paths:
        source = path.read_text()
        for match in FENCE.finditer(source):
            body = textwrap.dedent(match.group(2))
            first = body.split("\n", 1)[0]
            marker = MARKER.match(first)
            found.append(
                Block(
                    doc=path.name,
                    id=marker.group(1) if marker else None,
                    language=match.group(1),
                    text=body,
                    line=source.count("\n", 0, match.start()) + 1,
                )
            )
    return found


def shell_blocks() -> dict[str, Block]:
    """The `sh` blocks by id (an unmarked or repeated id is test_doc_blocks.py's to
    report)."""
    return {b.id: b for b in blocks() if b.language == "sh" and b.id is not None}


class BlockFailedError(AssertionError):
    """A block exited with another status than expected (its output attached)."""


@dataclass
class DocShell:
    """Runs doc blocks with bash (`set -euo pipefail`, so a failing command fails the
    block) in `cwd`, with `variables` in the environment; the CARRIED variables a block
    sets are kept for the next block."""

    cwd: Path
    variables: dict[str, str] = field(default_factory=dict)
    path_prefix: str = ""

    def run(
        self,
        block_id: str,
        status: int = 0,
        timeout: float = 60,
        cwd: Path | None = None,
        **extra: str,
    ) -> str:
        """Runs the block (in `cwd`, else the shell's own folder), checks its exit status,
        returns its stdout. `extra` variables apply to this run only."""
        block = shell_blocks()[block_id]
        carried = self.cwd / ".carried"
        trailer = (
            f'for __v in {" ".join(CARRIED)}; do if [ -n "${{!__v+x}}" ]; then '
            f'printf "%s=%s\\0" "$__v" "${{!__v}}"; fi; done > {carried}\n'
        )
        env = {**os.environ, **self.variables, **extra}
        env["PATH"] = self.path_prefix + env["PATH"]
        result = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + block.text + trailer],
            cwd=cwd or self.cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if result.returncode != status:
            raise BlockFailedError(
                f"{block.doc}:{block.line} block {block_id} exited {result.returncode}, "
                f"expected {status}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
            )
        if result.returncode == 0 and carried.exists():
            for item in carried.read_text().split("\0"):
                if item:
                    name, _, value = item.partition("=")
                    if extra.get(name) != value:
                        self.variables[name] = value
            carried.unlink()
        return result.stdout
