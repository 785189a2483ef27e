"""The two auth collections, with the fixed ids the official SDKs know.

PocketBase routes accept a collection by name or by id
(``/api/collections/users/...`` and ``/api/collections/_pb_users_auth_/...``
are the same thing), so lookups here accept both.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AuthCollection:
    """One auth collection: where accounts live and which fields its records show."""

    id: str
    name: str
    has_name: bool
    """Whether records carry the ``name`` field (``users`` does, ``_superusers`` does not)."""

    @property
    def is_superusers(self) -> bool:
        """Whether accounts of this collection are superusers."""
        return self is SUPERUSERS


USERS = AuthCollection(id="_pb_users_auth_", name="users", has_name=True)
SUPERUSERS = AuthCollection(id="pbc_3142635823", name="_superusers", has_name=False)

COLLECTIONS: tuple[AuthCollection, ...] = (USERS, SUPERUSERS)


def find_collection(name_or_id: str) -> AuthCollection | None:
    """The auth collection called ``name_or_id`` (by name or by id), if any."""
    for collection in COLLECTIONS:
        if name_or_id in (collection.name, collection.id):
            return collection
    return None
