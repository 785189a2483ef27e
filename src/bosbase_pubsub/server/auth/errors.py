"""Errors of the auth package.

::

    AuthError                  root: something about accounts or tokens went wrong
    ├── UnreadableBodyError    the request body is not a JSON object (or a form)
    └── InvalidInputError      (also a ValueError) submitted fields break a rule
        └── EmailTakenError    an account with that email already exists

``InvalidInputError.errors`` maps field names to ``FieldError`` values, which
serialise to PocketBase's ``{"code", "message"}`` items. The HTTP routes never
let these escape: they answer with PocketBase-shaped error bodies instead. The
CLI helpers in ``commands`` raise them so that the command line can print
``str(error)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class FieldError:
    """What is wrong with one submitted field, as PocketBase reports it."""

    code: str
    """A stable identifier such as ``validation_required``."""
    message: str
    """The English sentence the SDKs show, such as ``Cannot be blank.``."""
    params: Mapping[str, Any] | None = None
    """Values the message depends on (``{"min": 8}``), for translations."""

    def to_json(self) -> dict[str, Any]:
        """The item PocketBase puts under ``data[field]`` of an error body."""
        item: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.params:
            item["params"] = dict(self.params)
        return item


class AuthError(Exception):
    """Root of the auth package's errors."""


class UnreadableBodyError(AuthError):
    """The request body could not be read as a JSON object or a form."""


class InvalidInputError(AuthError, ValueError):
    """Submitted fields break a rule; ``errors`` maps each field to what is wrong."""

    def __init__(self, errors: Mapping[str, FieldError]) -> None:
        self.errors = dict(errors)
        super().__init__(
            "; ".join(f"{field}: {error.message}" for field, error in self.errors.items())
        )

    def to_json(self) -> dict[str, Any]:
        """The ``data`` member of a PocketBase error body."""
        return {field: error.to_json() for field, error in self.errors.items()}


class EmailTakenError(InvalidInputError):
    """An account of the collection already uses this email (compared case-insensitively)."""

    def __init__(self, collection: str, email: str) -> None:
        super().__init__({"email": FieldError("validation_not_unique", "Value must be unique.")})
        self.collection = collection
        self.email = email

    def __str__(self) -> str:
        return f"an account with the email {self.email!r} already exists in {self.collection!r}"
