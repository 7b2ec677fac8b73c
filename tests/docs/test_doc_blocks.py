"""Every command of the operator's docs (runbook, admin guide, upgrade guide) is in a
marked shell block that a test runs, so the docs cannot rot unnoticed."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.docs.blocks import DOCS, FENCE, blocks
from tests.support.services import REPO

# Blocks run by a test outside tests/docs/ (the file must name the block's id).
RUN_BY_OTHER_TESTS = {
    "backup-create": "tests/timescale/test_backup_drill.py",
    "backup-restore": "tests/timescale/test_backup_drill.py",
}
# Fences that show output or a file, never a command.
NOT_COMMANDS = {"text", "yaml", "json"}
# Commands that must not hide in inline code, where no test runs them.
RUNNABLE = re.compile(
    r"`(?:curl|psql|jq|alembic|amtool|promtool|mosquitto_ctrl|openssl|wattfleet-api) [^`]*`"
)


def ids_run_here() -> set[str]:
    """The ids the tests of this folder run: the first string given to a `.run(...)` (a
    DocShell's) or to `until(shell, ...)`."""
    ids: set[str] = set()
    for path in Path(__file__).parent.glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("run", "until"):
                ids.update(
                    arg.value
                    for arg in node.args[:2]
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
                )
    return ids


def test_every_fenced_block_is_a_marked_shell_block_or_not_a_command():
    for block in blocks():
        where = f"{block.doc}:{block.line}"
        if block.language in NOT_COMMANDS:
            assert block.id is None, f"{where}: a {block.language} block with a doc id"
            continue
        assert block.language == "sh", f"{where}: fence it as ```sh (or text/yaml/json)"
        assert block.id is not None, f"{where}: a shell block needs `# doc: <id>` first"


def test_block_ids_are_unique():
    ids = [b.id for b in blocks() if b.id is not None]
    assert sorted({i for i in ids if ids.count(i) > 1}) == []


def test_every_block_is_run_by_a_test():
    documented = {b.id for b in blocks() if b.id is not None}
    unrun = documented - ids_run_here() - RUN_BY_OTHER_TESTS.keys()
    assert unrun == set(), f"blocks no test runs: {sorted(unrun)}"
    assert ids_run_here() - documented == set(), "tests run blocks the docs no longer have"


@pytest.mark.parametrize("block_id", sorted(RUN_BY_OTHER_TESTS))
def test_blocks_run_elsewhere_are_named_by_their_test(block_id):
    path = REPO / RUN_BY_OTHER_TESTS[block_id]
    if not path.exists():
        pytest.skip(f"{path.name} is not on this branch yet (the backup drill's)")
    assert block_id in path.read_text(), f"{path} does not run block {block_id}"


def test_no_runnable_command_hides_in_inline_code():
    for path in DOCS:
        prose = FENCE.sub("", path.read_text())
        assert RUNNABLE.findall(prose) == [], f"{path.name}: put these in a ```sh block"
