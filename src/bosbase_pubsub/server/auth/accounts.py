"""Writing accounts: creating one, and changing a password (which revokes its tokens).

Shared by the HTTP routes and the CLI helpers so that both hash, key and
timestamp records the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ..storage.base import AccountStore, AuthRecord, DuplicateRecordError
from .collections import AuthCollection
from .errors import EmailTakenError
from .forms import parse_new_account
from .passwords import PasswordHasher
from .records import new_record_id, new_token_key, timestamp


async def create_account(
    accounts: AccountStore,
    hasher: PasswordHasher,
    collection: AuthCollection,
    *,
    email: str,
    password: str,
    name: str = "",
    email_visibility: bool = False,
    verified: bool = False,
) -> AuthRecord:
    """Store a new account with a fresh id and token key; return it.

    The inputs must already be valid (see ``forms``). Raises ``EmailTakenError``
    when the collection already has the email, ``StoreError`` when the store
    fails.
    """
    now = timestamp()
    record = AuthRecord(
        id=new_record_id(),
        collection=collection.name,
        email=email,
        password_hash=await hasher.hash(password),
        token_key=new_token_key(),
        verified=verified,
        email_visibility=email_visibility,
        name=name if collection.has_name else "",
        created=now,
        updated=now,
    )
    try:
        await accounts.insert(record)
    except DuplicateRecordError:
        raise EmailTakenError(collection.name, email) from None
    return record


async def change_password(
    accounts: AccountStore, hasher: PasswordHasher, record: AuthRecord, password: str
) -> AuthRecord:
    """Set ``record``'s password and replace its token key; return the updated record.

    Every token issued for the record before stops verifying, on every node.
    The password must already be valid (see ``forms``).
    """
    changed = dataclasses.replace(
        record,
        password_hash=await hasher.hash(password),
        token_key=new_token_key(),
        updated=timestamp(),
    )
    await accounts.update_password(
        changed.collection, changed.id, changed.password_hash, changed.token_key, changed.updated
    )
    return changed


async def create_from_form(
    accounts: AccountStore,
    hasher: PasswordHasher,
    collection: AuthCollection,
    body: Mapping[str, Any],
    *,
    manager: bool,
) -> AuthRecord:
    """A sign-up body (``parse_new_account``) made into a stored account (``create_account``).

    Raises ``InvalidInputError`` for the body's problems (an email taken included).
    """
    account = parse_new_account(body, collection, manager=manager)
    return await create_account(
        accounts,
        hasher,
        collection,
        email=account.email,
        password=account.password,
        name=account.name,
        email_visibility=account.email_visibility,
        verified=account.verified,
    )
