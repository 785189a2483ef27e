"""Record ids and timestamps in PocketBase's formats, made cheaply."""

from __future__ import annotations

import os
import time

_ALPHABET = b"abcdefghijklmnopqrstuvwxyz0123456789"
# Maps each random byte to an id character. 256 is not a multiple of 36, so
# the first few characters are slightly likelier: ids must be unique, not secret.
_TO_ALPHABET = bytes(_ALPHABET[i % len(_ALPHABET)] for i in range(256))
ID_LENGTH = 15
_POOLED_IDS = 256
_pool: list[str] = []
"""Ids made ahead: one ``os.urandom`` call (a system call) per 256 ids, not per id."""
if hasattr(os, "register_at_fork"):  # a forked child must not reuse its parent's pool
    os.register_at_fork(after_in_child=_pool.clear)


def new_id() -> str:
    """A 15-character ``[a-z0-9]`` id, like PocketBase's record ids."""
    if not _pool:
        text = os.urandom(ID_LENGTH * _POOLED_IDS).translate(_TO_ALPHABET).decode()
        _pool.extend(text[i : i + ID_LENGTH] for i in range(0, len(text), ID_LENGTH))
    return _pool.pop()


_second_cache: tuple[int, str] = (-1, "")
_milli_cache: tuple[int, str] = (-1, "")


def now_created() -> str:
    """The current UTC time in the contract's layout ``YYYY-MM-DD HH:MM:SS.mmmZ``."""
    global _second_cache, _milli_cache
    millis = time.time_ns() // 1_000_000
    cached_milli, text = _milli_cache
    if millis == cached_milli:  # under load, publishes share a millisecond by the dozen
        return text
    second, milli = divmod(millis, 1000)
    cached_second, prefix = _second_cache
    if second != cached_second:
        # strftime is slow next to the rest of a publish; do it once a second.
        prefix = time.strftime("%Y-%m-%d %H:%M:%S.", time.gmtime(second))
        _second_cache = (second, prefix)
    text = f"{prefix}{milli:03d}Z"
    _milli_cache = (millis, text)
    return text
