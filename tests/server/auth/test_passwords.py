"""bcrypt hashing off the event loop, and the password and email rules."""

from __future__ import annotations

import asyncio
import time

import pytest

from bosbase_pubsub.server.auth import PasswordHasher
from bosbase_pubsub.server.auth.forms import email_error, password_error


async def test_hash_then_verify(hasher: PasswordHasher) -> None:
    hashed = await hasher.hash("correct horse")
    assert hashed.startswith("$2b$04$")
    assert await hasher.verify("correct horse", hashed)
    assert not await hasher.verify("correct horsE", hashed)


async def test_each_hash_is_salted(hasher: PasswordHasher) -> None:
    assert await hasher.hash("same password") != await hasher.hash("same password")


async def test_unicode_password(hasher: PasswordHasher) -> None:
    hashed = await hasher.hash("pässwörd-ünïcode")
    assert await hasher.verify("pässwörd-ünïcode", hashed)
    assert not await hasher.verify("passwörd-ünïcode", hashed)


async def test_malformed_hash_is_a_mismatch(hasher: PasswordHasher) -> None:
    assert not await hasher.verify("whatever1", "not a bcrypt hash")
    assert not await hasher.verify("whatever1", "")


async def test_over_72_bytes_is_refused_not_truncated(hasher: PasswordHasher) -> None:
    with pytest.raises(ValueError, match="72 bytes"):
        await hasher.hash("é" * 40)  # 40 characters, 80 bytes
    hashed = await hasher.hash("x" * 72)
    assert not await hasher.verify("x" * 73, hashed)


def test_rounds_are_checked() -> None:
    with pytest.raises(ValueError, match="between 4 and 31"):
        PasswordHasher(rounds=3)


async def test_hashing_does_not_block_the_event_loop() -> None:
    slow = PasswordHasher(rounds=12)  # a few hundred milliseconds per hash
    ticks = 0
    done = asyncio.Event()

    async def tick() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    hashed = await slow.hash("a slow password")
    elapsed = time.monotonic() - started
    done.set()
    await ticker
    assert hashed.startswith("$2b$12$")
    # The loop kept running while bcrypt worked: roughly one tick per 10 ms.
    assert ticks >= max(3, int(elapsed / 0.01) // 3), (ticks, elapsed)


@pytest.mark.parametrize(
    ("password", "code"),
    [
        ("", "validation_required"),
        ("short", "validation_min_text_constraint"),
        ("1234567", "validation_min_text_constraint"),
        ("x" * 72, "validation_max_text_constraint"),
        ("é" * 40, "validation_max_text_constraint"),
    ],
)
def test_password_rules(password: str, code: str) -> None:
    error = password_error(password)
    assert error is not None
    assert error.code == code


def test_minimum_password_message() -> None:
    error = password_error("seven77")
    assert error is not None
    assert error.to_json() == {
        "code": "validation_min_text_constraint",
        "message": "Must be at least 8 character(s).",
        "params": {"min": 8},
    }


@pytest.mark.parametrize("password", ["12345678", "x" * 71, "pässwörd"])
def test_good_passwords(password: str) -> None:
    assert password_error(password) is None


@pytest.mark.parametrize(
    "email", ["a@example.com", "first.last+tag@sub.example.org", "x@localhost"]
)
def test_good_emails(email: str) -> None:
    assert email_error(email) is None


@pytest.mark.parametrize(
    ("email", "code"),
    [
        ("", "validation_required"),
        ("not-an-email", "validation_is_email"),
        ("a@", "validation_is_email"),
        ("@example.com", "validation_is_email"),
        ("a b@example.com", "validation_is_email"),
        ("a@-example.com", "validation_is_email"),
        ("a@" + "x" * 250 + ".com", "validation_is_email"),
    ],
)
def test_bad_emails(email: str, code: str) -> None:
    error = email_error(email)
    assert error is not None
    assert error.code == code
