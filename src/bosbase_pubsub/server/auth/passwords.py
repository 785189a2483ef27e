"""bcrypt password hashing, off the event loop.

bcrypt is slow on purpose (tens of milliseconds at the default cost), so every
hash and check runs in a worker thread; the event loop keeps serving other
connections meanwhile. A semaphore bounds how many run at once, so a burst of
sign-ins cannot take every thread of the loop's default executor (which DNS
lookups and file I/O share).
"""

from __future__ import annotations

import asyncio
import os

import bcrypt

from .forms import MAX_PASSWORD_BYTES

DEFAULT_ROUNDS = 10
"""bcrypt's cost factor, as in PocketBase (Go's ``bcrypt.DefaultCost``)."""


class PasswordHasher:
    """Hashes and checks passwords with bcrypt in worker threads.

    Args:
        rounds: bcrypt's cost factor (4 to 31) for new hashes. Checking reads
            the cost from the stored hash, so changing it affects new
            passwords only.
        max_concurrency: bcrypt operations running at once; others wait.
    """

    def __init__(self, *, rounds: int = DEFAULT_ROUNDS, max_concurrency: int | None = None) -> None:
        if not 4 <= rounds <= 31:
            raise ValueError(f"bcrypt rounds must be between 4 and 31, not {rounds}")
        self.rounds = rounds
        self._slots = asyncio.Semaphore(max_concurrency or max(2, os.cpu_count() or 2))

    async def hash(self, password: str) -> str:
        """The bcrypt hash of ``password`` (``$2b$...``).

        Raises ``ValueError`` when its UTF-8 form exceeds bcrypt's 72 bytes;
        validate with ``forms.password_error`` first.
        """
        secret = password.encode()
        if len(secret) > MAX_PASSWORD_BYTES:
            raise ValueError(f"password longer than {MAX_PASSWORD_BYTES} bytes")
        salt = bcrypt.gensalt(self.rounds)
        async with self._slots:
            hashed = await asyncio.to_thread(bcrypt.hashpw, secret, salt)
        return hashed.decode()

    async def verify(self, password: str, hashed: str) -> bool:
        """Whether ``password`` matches ``hashed``; ``False`` for a malformed hash."""
        secret = password.encode()
        if len(secret) > MAX_PASSWORD_BYTES:
            return False  # never hashed: ``hash`` refuses such passwords
        async with self._slots:
            try:
                return await asyncio.to_thread(bcrypt.checkpw, secret, hashed.encode())
            except ValueError:  # not a bcrypt hash
                return False
