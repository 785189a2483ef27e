"""Accounts and tokens: PocketBase-compatible auth for the pub/sub server.

The server builds one ``Authenticator``, awaits its ``start()``, registers its
REST routes with ``add_routes(app, authenticator)`` and asks it (or the module-level
``identify``) who sent a request or opened a WebSocket. ``upsert_superuser``
and ``create_user`` serve the command line.

Modules: ``collections`` (the two auth collections), ``forms`` (input rules
and PocketBase's error codes), ``passwords`` (bcrypt off the loop),
``tokens`` (JWTs and ``Identity``), ``identity`` (where a request carries its
token), ``ratelimit`` (failed sign-ins), ``records`` (JSON shapes),
``accounts`` (writes), ``routes`` (HTTP), ``commands`` (CLI helpers).
"""

from __future__ import annotations

from .authenticator import AUTHENTICATOR_KEY, Authenticator, identify
from .collections import SUPERUSERS, USERS, AuthCollection, find_collection
from .commands import AccountError, create_user, upsert_superuser
from .errors import AuthError, EmailTakenError, FieldError, InvalidInputError, UnreadableBodyError
from .passwords import PasswordHasher
from .ratelimit import SigninLimiter
from .records import record_json
from .routes import add_routes
from .tokens import Identity, TokenSource

__all__ = [
    "AUTHENTICATOR_KEY",
    "SUPERUSERS",
    "USERS",
    "AccountError",
    "AuthCollection",
    "AuthError",
    "Authenticator",
    "EmailTakenError",
    "FieldError",
    "Identity",
    "InvalidInputError",
    "PasswordHasher",
    "SigninLimiter",
    "TokenSource",
    "UnreadableBodyError",
    "add_routes",
    "create_user",
    "find_collection",
    "identify",
    "record_json",
    "upsert_superuser",
]
