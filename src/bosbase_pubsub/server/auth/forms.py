"""Validation of the submitted auth forms: pure functions, no I/O.

Each ``parse_*`` function takes the decoded request body (a mapping) and
returns a small frozen dataclass, or raises ``InvalidInputError`` whose ``errors``
use PocketBase's codes and messages, so that the SDKs (and apps that
translate by code) show the familiar texts:

- ``validation_required``: ``Cannot be blank.``
- ``validation_is_email``: ``Must be a valid email address.``
- ``validation_min_text_constraint``: ``Must be at least 8 character(s).``
- ``validation_values_mismatch``: ``Values don't match.``
- ``validation_not_unique``: ``Value must be unique.``

Checking an old password needs bcrypt, hence a thread: the routes do it after
``parse_password_change`` accepted the form's shape.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..storage.base import AuthRecord
from .collections import AuthCollection
from .errors import FieldError, InvalidInputError, UnreadableBodyError

MIN_PASSWORD_LENGTH = 8
"""PocketBase's default minimum, in characters."""
MAX_PASSWORD_LENGTH = 71
"""PocketBase's maximum, in characters."""
MAX_PASSWORD_BYTES = 72
"""bcrypt only reads 72 bytes; longer UTF-8 passwords are refused rather than truncated."""
MAX_IDENTITY_LENGTH = 255
"""Longest ``identity`` and ``password`` accepted by auth-with-password."""
MAX_EMAIL_LENGTH = 254
MAX_NAME_LENGTH = 255

REQUIRED = FieldError("validation_required", "Cannot be blank.")
INVALID_EMAIL = FieldError("validation_is_email", "Must be a valid email address.")
MISMATCH = FieldError("validation_values_mismatch", "Values don't match.")
INVALID_VALUE = FieldError("validation_invalid_value", "Invalid value.")
HOLDS_NUL = FieldError("validation_invalid_value", "Must not contain the NUL character.")
INVALID_OLD_PASSWORD = FieldError(
    "validation_invalid_old_password", "Missing or invalid old password."
)
NOT_SUPPORTED = FieldError(
    "validation_not_supported", "This field cannot be changed on this server."
)

# The HTML5 "valid e-mail address" grammar, which ozzo-validation (PocketBase's
# validator) also uses.
_EMAIL = re.compile(
    r"^[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+"
    r"@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$"
)


def email_error(email: str) -> FieldError | None:
    """What is wrong with ``email`` as an account's email, if anything."""
    if not email:
        return REQUIRED
    if len(email) > MAX_EMAIL_LENGTH or not _EMAIL.fullmatch(email):
        return INVALID_EMAIL
    return None


def password_error(password: str) -> FieldError | None:
    """What is wrong with ``password`` as a new password, if anything."""
    if not password:
        return REQUIRED
    if len(password) < MIN_PASSWORD_LENGTH:
        return FieldError(
            "validation_min_text_constraint",
            f"Must be at least {MIN_PASSWORD_LENGTH} character(s).",
            {"min": MIN_PASSWORD_LENGTH},
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        return FieldError(
            "validation_max_text_constraint",
            f"Must be less than {MAX_PASSWORD_LENGTH} character(s).",
            {"max": MAX_PASSWORD_LENGTH},
        )
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        return FieldError(
            "validation_max_text_constraint",
            f"Must be at most {MAX_PASSWORD_BYTES} bytes once UTF-8 encoded.",
            {"max": MAX_PASSWORD_BYTES},
        )
    if "\x00" in password:  # bcrypt refuses it
        return HOLDS_NUL
    return None


def check_new_account(email: str, password: str) -> None:
    """Raise ``InvalidInputError`` unless ``email`` and ``password`` may make an account."""
    errors = {
        field: error
        for field, error in (("email", email_error(email)), ("password", password_error(password)))
        if error is not None
    }
    if errors:
        raise InvalidInputError(errors)


def _text(value: Any) -> str | None:
    """A field as text the way PocketBase casts it; ``None`` if it cannot be text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return None


def _flag(value: Any) -> bool | None:
    """A field as a boolean; ``None`` if it is not one."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "on", "false", "0", ""):
        return value.strip().lower() in ("true", "1", "on")
    return None


# --- auth-with-password --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignIn:
    """A valid ``auth-with-password`` body."""

    identity: str
    password: str

    @property
    def identity_key(self) -> str:
        """The identity as the failed-sign-in limiter counts it."""
        return self.identity.strip().lower()


def parse_sign_in(body: Mapping[str, Any]) -> SignIn:
    """Read ``{"identity", "password"}``.

    Raises ``UnreadableBodyError`` when a field is not a string (PocketBase cannot
    bind it either) and ``InvalidInputError`` when one is blank or too long.
    """
    values: dict[str, str] = {}
    errors: dict[str, FieldError] = {}
    for field in ("identity", "password"):
        value = body.get(field)
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise UnreadableBodyError(f"{field} must be a string")
        values[field] = value
        if not value:
            errors[field] = REQUIRED
        elif len(value) > MAX_IDENTITY_LENGTH:
            errors[field] = FieldError(
                "validation_length_out_of_range",
                f"The length must be between 1 and {MAX_IDENTITY_LENGTH}.",
                {"min": 1, "max": MAX_IDENTITY_LENGTH},
            )
    if errors:
        raise InvalidInputError(errors)
    return SignIn(identity=values["identity"].strip(), password=values["password"])


# --- records: create -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewAccount:
    """A valid ``POST /api/collections/{collection}/records`` body."""

    email: str
    password: str
    name: str
    email_visibility: bool
    verified: bool


def parse_new_account(
    body: Mapping[str, Any], collection: AuthCollection, *, manager: bool
) -> NewAccount:
    """Read a sign-up body: ``email``, ``password``, ``passwordConfirm``, and optionally
    ``name`` (``users`` only), ``emailVisibility`` and ``verified``.

    Only a ``manager`` (a superuser) may create an already verified account,
    as in PocketBase. Unknown fields are ignored. Raises ``InvalidInputError``
    with every problem found.
    """
    errors: dict[str, FieldError] = {}

    def text(field: str) -> str:
        value = _text(body.get(field))
        if value is None:
            errors[field] = INVALID_VALUE
            return ""
        return value

    def flag(field: str) -> bool:
        value = _flag(body.get(field))
        if value is None:
            errors[field] = INVALID_VALUE
            return False
        return value

    email = text("email").strip()
    password = text("password")
    confirm = text("passwordConfirm")
    name = text("name") if collection.has_name else ""
    visible = flag("emailVisibility")
    verified = flag("verified")

    for field, error in (("email", email_error(email)), ("password", password_error(password))):
        if error is not None:
            errors.setdefault(field, error)
    if not confirm:
        errors.setdefault("passwordConfirm", REQUIRED)
    elif confirm != password:
        errors.setdefault("passwordConfirm", MISMATCH)
    if "\x00" in name:  # no store's text column holds it
        errors.setdefault("name", HOLDS_NUL)
    if len(name) > MAX_NAME_LENGTH:
        errors.setdefault(
            "name",
            FieldError(
                "validation_max_text_constraint",
                f"Must be no more than {MAX_NAME_LENGTH} character(s).",
                {"max": MAX_NAME_LENGTH},
            ),
        )
    if verified and not manager:
        errors.setdefault("verified", MISMATCH)
    if errors:
        raise InvalidInputError(errors)
    return NewAccount(
        email=email, password=password, name=name, email_visibility=visible, verified=verified
    )


# --- records: update -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PasswordChange:
    """A valid password change; ``old_password`` still has to be checked against the hash."""

    password: str
    old_password: str | None
    """``None`` when the requester may change it without (a superuser)."""


def parse_password_change(
    body: Mapping[str, Any], record: AuthRecord, collection: AuthCollection, *, manager: bool
) -> PasswordChange | None:
    """Read a ``PATCH .../records/{id}`` body; ``None`` when it changes nothing.

    Only the password can change here (``password``, ``passwordConfirm`` and,
    unless ``manager``, ``oldPassword``). A field resubmitted with its current
    value is accepted; any other change is refused with a field error rather
    than silently ignored. Raises ``InvalidInputError``.
    """
    errors: dict[str, FieldError] = {}

    def text(field: str) -> str:
        value = _text(body.get(field))
        if value is None:
            errors[field] = INVALID_VALUE
            return ""
        return value

    current: dict[str, Any] = {
        "email": record.email,
        "emailVisibility": record.email_visibility,
        "verified": record.verified,
    }
    if collection.has_name:
        current["name"] = record.name
    for field, value in current.items():
        if field not in body:
            continue
        submitted = _flag(body[field]) if isinstance(value, bool) else _text(body[field])
        if submitted == value:
            continue
        if field in ("email", "verified") and not manager:
            errors[field] = MISMATCH  # what PocketBase answers without manage access
        else:
            errors[field] = NOT_SUPPORTED

    password = text("password")
    confirm = text("passwordConfirm")
    old = text("oldPassword")
    if not (password or confirm or old):
        if errors:
            raise InvalidInputError(errors)
        return None

    error = password_error(password)
    if error is not None:
        errors["password"] = error
    if not confirm:
        errors["passwordConfirm"] = REQUIRED
    elif confirm != password:
        errors["passwordConfirm"] = MISMATCH
    if not manager and not old:
        errors["oldPassword"] = REQUIRED
    if errors:
        raise InvalidInputError(errors)
    return PasswordChange(password=password, old_password=None if manager else old)
