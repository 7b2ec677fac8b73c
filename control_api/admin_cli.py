"""Operator commands that need no running API: the first admin, the audit check, and
backup and restore (exit codes: 0 done, 1 restored but not equal to the backup, 2 bad
arguments or settings, 3 nothing or not everything done: see the message)."""

from __future__ import annotations

import sys
from pathlib import Path

from sqlalchemy import Engine, text

from control_api import audit, backup, passwords
from control_api.identity import normalized_email


class AdminCliError(Exception):
    """What went wrong, in words for the operator."""


def create_admin(engine: Engine, email: str, password: str, totp: bool) -> tuple[str, str | None]:
    """Creates the admin, or sets the password of an existing one (idempotent).
    Returns ("created" | "updated", the otpauth URI when TOTP was set up)."""
    if len(password) < 12:
        raise AdminCliError("the password needs at least 12 characters")
    try:
        email = normalized_email(email)
    except ValueError as exc:
        raise AdminCliError(f"not an email address: {exc}") from exc
    secret = passwords.new_totp_secret() if totp else None
    with engine.begin() as conn:
        existing = conn.execute(
            text("SELECT id, role FROM users WHERE email = :email"), {"email": email}
        ).first()
        if existing is not None and existing.role != "admin":
            raise AdminCliError(f"{email} exists as a {existing.role}, not an admin")
        params = {"email": email, "hash": passwords.hash_password(password), "secret": secret}
        if existing is None:
            conn.execute(
                text(
                    "INSERT INTO users (email, password_hash, role, totp_secret, totp_enabled)"
                    " VALUES (:email, :hash, 'admin', :secret, CAST(:secret AS text) IS NOT NULL)"
                ),
                params,
            )
        else:
            conn.execute(
                text(
                    # A new password: the account's earlier tokens end here.
                    "UPDATE users SET password_hash = :hash, disabled = false,"
                    " token_version = token_version + 1,"
                    " totp_secret = coalesce(:secret, totp_secret),"
                    " totp_enabled = totp_enabled OR CAST(:secret AS text) IS NOT NULL"
                    " WHERE email = :email"
                ),
                params,
            )
        outcome = "created" if existing is None else "updated"
        audit.append(
            conn,
            audit.AuditEntry(
                action="cli_create_admin", outcome="ok", actor_email=email, params={"totp": totp}
            ),
        )
    return outcome, passwords.totp_uri(secret, email) if secret else None


def verify_audit(engine: Engine) -> audit.ChainReport:
    with engine.connect() as conn:
        return audit.verify_chain(conn)


def run_backup(url: str, out: Path, mosquitto_dir: Path | None, pg_bin: Path | None) -> int:
    try:
        manifest = backup.backup(url, out, mosquitto_dir, pg_bin)
    except backup.BackupError as exc:
        print(f"backup: {exc}", file=sys.stderr)
        return 3
    rows = sum(manifest["row_counts"].values())
    print(
        f"backup in {out}: {len(manifest['row_counts'])} tables, {rows} rows,"
        f" revision {manifest['alembic_revision']}"
        + (", broker state" if mosquitto_dir is not None else "")
    )
    return 0


def run_restore(src: Path, url: str, mosquitto_dir: Path | None, pg_bin: Path | None) -> int:
    try:
        report = backup.restore(src, url, mosquitto_dir, pg_bin)
    except backup.BackupError as exc:
        print(f"restore: {exc}", file=sys.stderr)
        return 3
    if report.restore_errors:
        print(f"restore: pg_restore reported errors:\n{report.restore_errors}", file=sys.stderr)
    for name, (expected, got) in report.mismatches.items():
        print(f"restore: {name}: {expected} rows in the backup, {got} restored", file=sys.stderr)
    if not report.ok:
        return 1
    print(f"restored {src} into the database; row counts match the manifest")
    return 0
