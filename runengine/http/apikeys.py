"""API keys as an auth hook: `Authorization: Bearer KEY` or `x-api-key: KEY` -> the key's name.

    auth = api_key_auth(parse_api_keys("alice=sk-1,bob=sk-2"))    # {"sk-1": "alice", "sk-2": "bob"}
    app = build_app(engine, auth=auth)

The Bearer form is what seeds 002-004 show, `x-api-key` what the Kore Runs API seeds show;
both are accepted on every surface. A presented key is compared with every configured key,
each comparison in constant time over equal-length digests, so neither the time taken nor
the order of the keys tells which key, or how much of one, matched. A name may have several
keys (rotation); a key belongs to one name.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping

from ..errors import InvalidRequest
from .auth import AuthHook


def parse_api_key(entry: str) -> tuple[str, str]:
    """`NAME=KEY` -> (NAME, KEY); both must be non-empty, without spaces or commas."""
    name, sep, key = entry.strip().partition("=")
    name, key = name.strip(), key.strip()
    if not sep or not name or not key or any(c.isspace() or c == "," for c in name + key):
        raise InvalidRequest(f"an API key is NAME=KEY (no spaces or commas), got {entry!r}")
    return name, key


def parse_api_keys(text: str) -> list[tuple[str, str]]:
    """`alice=sk-1,bob=sk-2` -> [("alice", "sk-1"), ("bob", "sk-2")] (empty entries are skipped)."""
    return [parse_api_key(entry) for entry in text.split(",") if entry.strip()]


def keys_by_secret(entries: Iterable[tuple[str, str]]) -> dict[str, str]:
    """(NAME, KEY) pairs -> {KEY: NAME}; one key given to two names is refused."""
    found: dict[str, str] = {}
    for name, key in entries:
        if found.setdefault(key, name) != name:
            raise InvalidRequest(f"one API key is given to both {found[key]!r} and {name!r}")
    return found


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def presented_keys(headers: Mapping[str, str]) -> list[str]:
    """The keys a request presents: the Bearer token and the x-api-key header."""
    found = []
    scheme, _, token = (headers.get("authorization") or "").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        found.append(token.strip())
    api_key = (headers.get("x-api-key") or "").strip()
    if api_key:
        found.append(api_key)
    return found


def api_key_auth(keys: Mapping[str, str]) -> AuthHook:
    """An auth hook for `keys` (KEY -> principal name): the name of the key presented, else None (401)."""
    known = [(_digest(key), name) for key, name in keys.items()]

    def check(headers: Mapping[str, str]) -> str | None:
        principal = None
        for presented in presented_keys(headers):
            digest = _digest(presented)
            for key, name in known:  # every key, every time: no early exit on a match
                if hmac.compare_digest(digest, key) and principal is None:
                    principal = name
        return principal

    return check


__all__ = ["api_key_auth", "keys_by_secret", "parse_api_key", "parse_api_keys", "presented_keys"]
