"""`python -m grafana.build`: writes every dashboard's JSON under grafana/dashboards/
(`admin/` for the admin organization only, `tenant/` for every organization).
`--check` writes nothing and exits 1 if a committed file is stale."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.cog.encoder import JSONEncoder

from grafana.dashboards import DASHBOARDS, DashboardSpec

OUT = Path(__file__).resolve().parent / "dashboards"


def _as_json(spec: DashboardSpec) -> str:
    body = json.loads(JSONEncoder().encode(spec.build().build()))
    for panel in body.get("panels", []):
        # The SDK writes `null` for options never set; Grafana wants an object to fill
        # with the panel plugin's defaults.
        if panel.get("options") is None:
            panel["options"] = {}
    return json.dumps(body, sort_keys=True, indent=2) + "\n"


def rendered() -> dict[Path, str]:
    """Each dashboard's file and its JSON text, as committed."""
    return {OUT / spec.audience / f"{spec.uid}.json": _as_json(spec) for spec in DASHBOARDS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a file is stale")
    args = parser.parse_args(argv)
    files = rendered()
    stale = [path for path, text in files.items() if not path.exists() or path.read_text() != text]
    extra = [p for p in OUT.glob("*/*.json") if p not in files]
    if args.check:
        for path in stale + extra:
            print(f"stale: {path.relative_to(OUT.parent.parent)}", file=sys.stderr)
        return 1 if stale or extra else 0
    for path in extra:
        path.unlink()
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    print(f"wrote {len(files)} dashboards under {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
