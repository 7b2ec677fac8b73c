"""Text from a peer: what a string we accept may not contain.

PostgreSQL text and jsonb cannot hold NUL, and a lone UTF-16 surrogate (what JSON's
`"\\ud800"` decodes to in Python) cannot be encoded as UTF-8 at all: a value carrying
either validates as a `str` but cannot be stored, logged as UTF-8 or echoed in an
answer. Every string field of a request is declared as

    Annotated[str, StringConstraints(max_length=...), STORABLE]

(bounded, then checked here), and a pushed config's model checks every key and value
with `refuse_unstorable` (contract/node_config.py), so such a value is refused where it
enters, with a message naming the character.

Text a device names itself with (the inventory, contract/inventory.py) must also be
PRINTABLE: no control characters, line breaks or invisible format characters (a bidi
override in a serial number would reorder what an operator reads); the agent cleans it
with `printable` before sending.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import AfterValidator, BeforeValidator
from pydantic_core import PydanticCustomError

# NUL, and every UTF-16 surrogate code point (in a Python str they are always lone).
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def refuse_unstorable(value: object) -> object:
    """The value unchanged, unless it is a str with NUL or a lone surrogate (ValueError).
    Anything else passes on to the type's own validation."""
    if isinstance(value, str):
        found = UNSTORABLE.search(value)
        if found:
            raise ValueError(
                f"text must not contain U+{ord(found.group()):04X} (NUL or a lone surrogate)"
            )
    return value


# Last in an Annotated string type, after its StringConstraints: it runs first, so the
# constraints' own checks (length, pattern) only ever see storable text.
STORABLE = BeforeValidator(refuse_unstorable)


def storable(value: str) -> str:
    """The text with each NUL or lone surrogate replaced by U+FFFD: for recording or
    echoing what a refused request carried."""
    return UNSTORABLE.sub("\ufffd", value)


def storable_json(value: Any) -> Any:
    """A JSON-ready value (dicts, lists, strings, numbers) with every string in it, keys
    included, made `storable`."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {storable_json(k): storable_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable_json(v) for v in value]
    return value


def refuse_unprintable(value: str) -> str:
    """The text unchanged, unless it holds a character that is not printable (control
    characters, NUL, lone surrogates, line breaks, format characters)."""
    for char in value:
        if not char.isprintable():
            raise PydanticCustomError(
                "not_printable",
                "text must be printable (found U+{code})",
                {"code": f"{ord(char):04X}"},
            )
    return value


PRINTABLE = AfterValidator(refuse_unprintable)


def printable(value: str) -> str:
    """The text with each character that is not printable replaced by U+FFFD: device
    text cleaned so it passes PRINTABLE."""
    return "".join(c if c.isprintable() else "\ufffd" for c in value)
