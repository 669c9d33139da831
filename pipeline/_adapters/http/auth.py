"""Who may change something: the admin token of the control API (contract 7, 8).

A changing call needs ``Authorization: Bearer <ADMIN_TOKEN>``. With no
``ADMIN_TOKEN`` configured the calls are off (403); a missing or wrong token
is 401 with ``WWW-Authenticate: Bearer``, as RFC 6750 asks, so a client knows
what to send. The scheme is matched without regard to case (RFC 7235: ``bearer``
is ``Bearer``); the token itself is compared in constant time.
"""

from __future__ import annotations

import hmac

__all__ = ["Refusal", "refusal"]

# The error body, its status and the headers that go with it.
Refusal = tuple[dict[str, str], int, dict[str, str]]


def _token(header: str) -> str | None:
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip()


def refusal(admin_token: str | None) -> Refusal | None:
    """Why the request being served may not change anything, or None when it may."""
    # Imported here: the operator commands load this package's job views without
    # serving HTTP, and quart is a third of such a command's start-up.
    from quart import request

    if admin_token is None:
        return {"error": "the control API is off: ADMIN_TOKEN is not set"}, 403, {}
    given = _token(request.headers.get("Authorization", ""))
    if given is None or not hmac.compare_digest(given.encode(), admin_token.encode()):
        challenge = {"WWW-Authenticate": 'Bearer realm="pipeline"'}
        return {"error": "missing or wrong bearer token"}, 401, challenge
    return None
