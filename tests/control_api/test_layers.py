"""The control API's layers, read from its source: route modules import no other route
module, only the request layer (routes, their dependencies, the app) knows HTTP, and
nothing under control_api/ imports the edge agent (the node config schema is the
contract's)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import control_api
from tests.support.services import REPO

PACKAGE = Path(control_api.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))
# The modules that read requests and shape answers; every other one holds rules and
# queries, raises control_api.errors, and does not import the web framework.
REQUEST_LAYER = {"api_docs.py", "app.py", "deps.py", "request_audit.py", "schemas.py"}


def imported(path: Path) -> set[str]:
    """Every module and name the file imports, as dotted paths."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_nothing_in_the_control_api_imports_the_edge():
    direct = {
        str(path.relative_to(PACKAGE)): sorted(n for n in imported(path) if _within(n, "edge"))
        for path in MODULES
    }
    assert {path: names for path, names in direct.items() if names} == {}
    # Nor through anything it imports.
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, control_api.app, control_api.__main__;"
            " print(sorted(m for m in sys.modules if m == 'edge' or m.startswith('edge.')))",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == "[]"


def test_route_modules_import_no_other_route_module():
    routes = [path for path in MODULES if path.parent.name == "routes"]
    assert len(routes) > 5
    found = {
        path.name: sorted(n for n in imported(path) if _within(n, "control_api.routes"))
        for path in routes
    }
    assert {name: names for name, names in found.items() if names} == {}


def test_only_the_request_layer_knows_http():
    rule_modules = [
        path for path in MODULES if path.parent.name != "routes" and path.name not in REQUEST_LAYER
    ]
    assert {"commands.py", "nodes.py", "tenants.py", "users.py"} <= {p.name for p in rule_modules}
    web = {
        path.name: sorted(
            n for n in imported(path) if _within(n, "fastapi") or _within(n, "starlette")
        )
        for path in rule_modules
    }
    assert {name: names for name, names in web.items() if names} == {}
