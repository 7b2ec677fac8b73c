"""Accounts: single-use TOTP codes, revocable tokens, and one normal form for email
addresses.

`users.totp_last_step` is the time step (a 30-second counter) of the last TOTP code the
account used: a code is accepted only for a later step, so a code seen once (over a
shoulder, in a proxy's log) cannot log in again within its window.

`users.token_version` is carried by every token issued for the account; a new password,
disabling and enabling add one, so every token issued before stops working.

`users.email` holds the address as the API normalizes it (control_api/identity.py:
email-validator's form, then NFKC case folded), and logins look it up by equality,
never by SQL `lower()`, whose idea of lower case is not Python's. Existing addresses
are brought to that form here (they were all normalized by email-validator already, or
typed by an operator; folding is what remains), and the unique index is on the address
itself. Two accounts whose addresses fold to the same one stop the upgrade, naming
them: an operator decides which to keep.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

import unicodedata

from alembic import op
from sqlalchemy import text

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _folded(address: str) -> str:
    # Frozen here: what control_api/identity.py adds to email-validator's normal form.
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", address).casefold())


def upgrade() -> None:
    op.execute("ALTER TABLE users ADD COLUMN IF NOT EXISTS totp_last_step bigint")
    op.execute(
        "ALTER TABLE users ADD COLUMN IF NOT EXISTS token_version integer NOT NULL DEFAULT 0"
    )
    conn = op.get_bind()
    users = conn.execute(text("SELECT id, email FROM users ORDER BY id")).all()
    by_address: dict[str, list[str]] = {}
    for _, email in users:
        by_address.setdefault(_folded(email), []).append(email)
    clashes = [emails for emails in by_address.values() if len(emails) > 1]
    if clashes:
        raise RuntimeError(f"accounts whose addresses are the same once folded: {clashes}")
    op.execute("DROP INDEX IF EXISTS users_email_idx")
    for user_id, email in users:
        if _folded(email) != email:
            conn.execute(
                text("UPDATE users SET email = :email WHERE id = :id"),
                {"email": _folded(email), "id": user_id},
            )
    op.execute("CREATE UNIQUE INDEX IF NOT EXISTS users_email_key ON users (email)")


def downgrade() -> None:
    # Addresses stay folded: the lower(email) index holds them as well.
    op.execute("DROP INDEX IF EXISTS users_email_key")
    op.execute("CREATE UNIQUE INDEX IF NOT EXISTS users_email_idx ON users (lower(email))")
    op.execute("ALTER TABLE users DROP COLUMN IF EXISTS totp_last_step")
    op.execute("ALTER TABLE users DROP COLUMN IF EXISTS token_version")
