"""Account helpers for the command line (``bosbase-pubsub superuser upsert`` and the like).

They apply the same rules as the HTTP API (a valid email, a password of 8 to
71 characters) and raise ``AccountError`` (a ``ValueError``) with a readable
message when the input breaks one or the email is taken, so the CLI can print
``str(error)``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from ..storage.base import AccountStore, AuthRecord, DuplicateRecordError
from .accounts import change_password, create_account
from .collections import COLLECTIONS, SUPERUSERS, USERS
from .errors import InvalidInputError
from .forms import check_new_account
from .passwords import PasswordHasher
from .tokens import secret_name

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


@dataclass
class CopyReport:
    """What ``copy_accounts`` did, per collection and for the signing secrets."""

    copied: dict[str, int] = field(default_factory=dict)
    """Records inserted into the target, by collection name."""
    present: dict[str, int] = field(default_factory=dict)
    """Records the target already had (same id): left as they are."""
    conflicts: list[str] = field(default_factory=list)
    """``collection/email`` of records whose email another record holds in the target."""
    secrets_kept: list[str] = field(default_factory=list)
    """Collections whose target already had a different signing secret: tokens the
    source issued for them do not verify on the target (their users sign in again)."""


COPY_PAGE = 500
"""Records read from the source per request."""


async def copy_accounts(source: AccountStore, target: AccountStore) -> CopyReport:
    """Copy every account of ``users`` and ``_superusers``, and the token signing
    secrets, from ``source`` to ``target`` (for moving to another store).

    Records keep their ids, password hashes and token keys, and the secrets move
    too, so passwords and the tokens already issued keep working on the target.
    Safe to run again: a record the target has (same id) is left alone. Messages
    and the resume epoch are not copied: messages are transient, and positions
    belong to the store that numbered them.
    """
    report = CopyReport()
    for collection in COLLECTIONS:
        name = collection.name
        report.copied[name] = report.present[name] = 0
        offset = 0
        while page := await source.list_records(name, offset=offset, limit=COPY_PAGE):
            offset += len(page)
            for record in page:
                if await target.find_by_id(name, record.id) is not None:
                    report.present[name] += 1
                    continue
                try:
                    await target.insert(record)
                except DuplicateRecordError:
                    report.conflicts.append(f"{name}/{record.email}")
                else:
                    report.copied[name] += 1
        # A source with no secret yet never issued a token: the one made here is new.
        wanted = await source.secret(secret_name(collection), secrets.token_urlsafe(48))
        if await target.secret(secret_name(collection), wanted) != wanted:
            report.secrets_kept.append(name)
    return report
