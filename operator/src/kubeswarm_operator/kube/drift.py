"""Does a live object already hold what we want?  (Pure; decides whether to write.)

Server-side apply of an unchanged object is a no-op for etcd but still a
write request; comparing first makes an unchanged resync cost no writes.
The live object has more than we set (defaults, status, others' fields), so
"in sync" means every field we want is present with our value.
"""

from __future__ import annotations

from typing import Any


def _empty(value: object) -> bool:
    return value is None or value == {} or value == []


def contains(live: Any, want: Any) -> bool:
    """True if ``live`` holds every field of ``want`` with the same value.

    The API server drops empty maps and lists and stores int-or-string
    fields as given, so empty equals absent and 8080 equals "8080".
    """
    if isinstance(want, dict):
        if not isinstance(live, dict):
            return _empty(want) and _empty(live)
        return all(contains(live.get(key), value) for key, value in want.items())
    if isinstance(want, list):
        if not isinstance(live, list):
            return _empty(want) and _empty(live)
        return len(live) == len(want) and all(contains(a, b) for a, b in zip(live, want, strict=True))
    if _empty(want):
        return _empty(live)
    if type(live) is type(want):
        return bool(live == want)
    if isinstance(live, bool) or isinstance(want, bool):
        return False  # False == 0 in Python, not in Kubernetes
    return str(live) == str(want)
