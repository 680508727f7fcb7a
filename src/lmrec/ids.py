"""What an external user or item id may be, and how event names are spelled: one rule for the
API (bodies, paths, the fast path) and the importer, so that both store the same thing.

An id has 1 to 255 characters, no control character (C0, DEL, C1) and no whitespace at either
end (the importer strips it, the API refuses it, so `" 50 "` never becomes a second item).
Event names are lower case (the importer lower-cases them, and so does the API).
"""

from __future__ import annotations

__all__ = ["CONTROL", "EVENT_PATTERN", "ID_PATTERN", "MAX_ID", "event_name", "id_problem"]

import re

MAX_ID = 255
_CTRL = r"\x00-\x1f\x7f-\x9f"
#: Pattern of a valid id (pydantic's and Python's regex syntax alike).
ID_PATTERN = rf"^[^{_CTRL}\s](?:[^{_CTRL}]*[^{_CTRL}\s])?$"
#: Pattern of a valid event name (before lower-casing).
EVENT_PATTERN = r"^[A-Za-z0-9_.:-]+$"
_ID = re.compile(ID_PATTERN)
#: Any control character.
#: Any control character (C0, DEL, C1).
CONTROL = re.compile(rf"[{_CTRL}]")


def id_problem(value: str) -> str | None:
    """Why `value` is not a valid id, or None when it is."""
    if not value:
        return "an id must not be empty"
    if len(value) > MAX_ID:
        return f"an id has at most {MAX_ID} characters"
    if CONTROL.search(value):
        return "an id must not contain control characters (NUL, newline, tab, ...)"
    if not _ID.match(value):
        return "an id must not start or end with whitespace"
    return None


def event_name(value: str) -> str:
    """The stored spelling of an event name: lower case, without surrounding whitespace."""
    return value.strip().lower()
