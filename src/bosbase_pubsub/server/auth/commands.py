"""Account helpers for the command line (``bosbase-pubsub superuser upsert`` and the like).

They apply the same rules as the HTTP API (a valid email, a password of 8 to
71 characters) and raise ``AccountError`` (a ``ValueError``) with a readable
message when the input breaks one or the email is taken, so the CLI can print
``str(error)``.
"""

from __future__ import annotations

from ..storage.base import AccountStore, AuthRecord
from .accounts import change_password, create_account
from .collections import SUPERUSERS, USERS
from .errors import InvalidInputError
from .forms import check_new_account
from .passwords import PasswordHasher

AccountError = InvalidInputError
"""What the helpers raise for bad input; ``EmailTakenError`` is a kind of it."""


async def upsert_superuser(
    accounts: AccountStore,
    email: str,
    password: str,
    *,
    hasher: PasswordHasher | None = None,
) -> AuthRecord:
    """Create the superuser ``email``, or set its password if it exists; return it.

    Setting the password revokes the superuser's earlier tokens. New
    superusers are created verified. Raises ``AccountError`` for an invalid
    email or password, ``StoreError`` when the store fails.
    """
    email = email.strip()
    check_new_account(email, password)
    hasher = hasher or PasswordHasher()
    existing = await accounts.find_by_email(SUPERUSERS.name, email)
    if existing is not None:
        return await change_password(accounts, hasher, existing, password)
    return await create_account(
        accounts, hasher, SUPERUSERS, email=email, password=password, verified=True
    )


async def create_user(
    accounts: AccountStore,
    email: str,
    password: str,
    *,
    hasher: PasswordHasher | None = None,
) -> AuthRecord:
    """Create the user ``email`` in ``users``; return it.

    Raises ``EmailTakenError`` (an ``AccountError``) if a user already has
    that email (compared case-insensitively), ``AccountError`` for an invalid
    email or password, ``StoreError`` when the store fails.
    """
    email = email.strip()
    check_new_account(email, password)
    return await create_account(
        accounts, hasher or PasswordHasher(), USERS, email=email, password=password
    )
