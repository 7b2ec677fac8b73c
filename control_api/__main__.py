"""`wattfleet-api` (or `python -m control_api`) serves the API; `create-admin`,
`verify-audit`, `backup` and `restore` are the operator's commands. Settings come from
`WATTFLEET_*` environment variables."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import uvicorn
from pydantic import ValidationError

from contract.process import configure_logging
from control_api.access_log import quiet_probes
from control_api.admin_cli import AdminCliError, create_admin, run_backup, run_restore, verify_audit
from control_api.app import create_app, make_engine
from control_api.config import ApiSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wattfleet-api")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the API (the default)")
    admin = sub.add_parser("create-admin", help="create the first admin (idempotent)")
    admin.add_argument("--email", required=True)
    admin.add_argument("--password-stdin", action="store_true", required=True)
    admin.add_argument("--totp", action="store_true", help="set up TOTP and print its URI")
    sub.add_parser("verify-audit", help="check the audit log's hash chain; exit 1 if broken")
    pg_bin_help = "bin directory of the PostgreSQL client tools (default: matched to the server)"
    backup = sub.add_parser("backup", help="dump the database (and broker state) into a new dir")
    backup.add_argument("--out", type=Path, required=True)
    backup.add_argument("--mosquitto-dir", type=Path, help="the broker's data directory")
    backup.add_argument("--pg-bin", type=Path, help=pg_bin_help)
    restore = sub.add_parser("restore", help="restore a backup into an empty database")
    restore.add_argument("--from", dest="src", type=Path, required=True)
    restore.add_argument("--database-url", required=True, help="the empty target database")
    restore.add_argument("--mosquitto-dir", type=Path, help="the (stopped) broker's data dir")
    restore.add_argument("--pg-bin", type=Path, help=pg_bin_help)
    args = parser.parse_args(argv)
    try:
        settings = ApiSettings()
    except ValidationError as exc:
        print(f"control_api: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    if args.command == "create-admin":
        password = sys.stdin.readline().rstrip("\n")
        try:
            outcome, uri = create_admin(make_engine(settings), args.email, password, args.totp)
        except AdminCliError as exc:
            print(f"create-admin: {exc}", file=sys.stderr)
            return 1
        print(f"admin {args.email} {outcome}")
        if uri:
            print(f"TOTP: {uri}")
        return 0
    if args.command == "verify-audit":
        report = verify_audit(make_engine(settings))
        print(
            f"checked {report.checked} rows; "
            + ("chain intact" if report.ok else f"bad rows: {report.bad_rows}")
        )
        return 0 if report.ok else 1
    if args.command == "backup":
        return run_backup(settings.database_url, args.out, args.mosquitto_dir, args.pg_bin)
    if args.command == "restore":
        return run_restore(args.src, args.database_url, args.mosquitto_dir, args.pg_bin)
    quiet_probes()
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_level=settings.log_level.lower(),
        # No logging config of uvicorn's own: its error and access lines go through the
        # root handler configure_logging set up, in the same format as ours.
        log_config=None,
        proxy_headers=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
