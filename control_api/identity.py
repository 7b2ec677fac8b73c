"""How an account is named: its email address in one normal form, computed here and
nowhere else.

Every way an address comes in (a login, a new user, the create-admin command) goes
through `normalized_email`, and what it returns is what is stored, looked up (plain
equality, never SQL `lower()`) and counted by the failed-login limits. One function
means one answer: PostgreSQL's `lower()` and Python's `str.lower()` disagree on
letters such as U+0130 (a capital I with a dot), and a login limit keyed by one while
the lookup used the other could be walked around by spelling the same account anew.
"""

from __future__ import annotations

import unicodedata

from email_validator import validate_email


def normalized_email(address: str) -> str:
    """email-validator's normalized form of the address (NFC, the domain in lower
    case), then Unicode's compatibility caseless form (NFKC, case folded): addresses
    that differ only in case or in compatibility spelling name the same account.
    Raises ValueError (email_validator.EmailNotValidError) when it is not an address."""
    normalized = validate_email(address, check_deliverability=False).normalized
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", normalized).casefold())
