"""``bosbase-pubsub sub`` and ``pub``: the SDK on the command line.

``sub TOPIC...`` prints every message as one JSON line on standard output
(``{"id", "topic", "data", "created"}``) until interrupted, or until
``--count`` messages; ``pub TOPIC [JSON]`` publishes its argument, or each
line of standard input, and prints each ack as a JSON line. Progress and
errors go to standard error, so standard output stays machine-readable.

Exit codes: 0 done, 1 the server or the connection failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any, TextIO

import orjson

from ._exceptions import AuthError, BosBaseError
from ._sync import BosBase
from ._types import Message

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class _UsageError(Exception):
    """Bad input from the user (exit code 2)."""


def run(args: argparse.Namespace) -> int:
    """Run ``sub`` or ``pub`` as parsed by ``bosbase_pubsub.cli``."""
    try:
        with BosBase(args.url, timeout=args.timeout) as client:
            _sign_in(client, args)
            if args.command == "sub":
                return _subscribe(client, args)
            return _publish(client, args)
    except _UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except BosBaseError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except ValueError as error:  # e.g. a malformed --url
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE


def _sign_in(client: BosBase, args: argparse.Namespace) -> None:
    """Use ``--token``, or sign in with ``--email``/``--password``."""
    if args.token:
        client.auth_store.save(args.token)
        return
    if not args.email and not args.password:
        return
    if not (args.email and args.password):
        raise _UsageError("--email and --password go together")
    collections = [args.collection] if args.collection else ["_superusers", "users"]
    for index, name in enumerate(collections):
        try:
            client.collection(name).auth_with_password(args.email, args.password)
            return
        except AuthError:
            if index == len(collections) - 1:
                raise


def _subscribe(client: BosBase, args: argparse.Namespace) -> int:
    done = threading.Event()
    lock = threading.Lock()
    count = 0
    broken = False

    def on_message(message: Message) -> None:
        nonlocal count, broken
        with lock:
            if done.is_set():
                return
            try:
                _write_line(sys.stdout, message)
            except (BrokenPipeError, ValueError):  # the reader went away (e.g. `| head`)
                broken = True
                done.set()
                return
            count += 1
            if args.count and count >= args.count:
                done.set()

    with _stop_on_signals(done):
        for topic in args.topics:
            client.pubsub.subscribe(topic, on_message)
        print(f"subscribed to {', '.join(args.topics)}", file=sys.stderr, flush=True)
        while not done.wait(0.5):
            pass
    if broken:
        _silence_stdout()
    return EXIT_OK


def _publish(client: BosBase, args: argparse.Namespace) -> int:
    values: Iterator[Any]
    if args.data is not None:
        values = iter([_parse(args.data, "the JSON argument")])
    else:
        values = _lines(sys.stdin)
    for value in values:
        ack = client.pubsub.publish(args.topic, value)
        try:
            _write_line(sys.stdout, ack)
        except BrokenPipeError:
            _silence_stdout()
            return EXIT_OK
    return EXIT_OK


def _lines(stream: TextIO) -> Iterator[Any]:
    for number, line in enumerate(stream, start=1):
        if line.strip():
            yield _parse(line, f"line {number}")


def _parse(text: str, where: str) -> Any:
    try:
        # The standard library keeps integers of any size exact.
        return json.loads(text)
    except ValueError as error:
        raise _UsageError(
            f"{where} is not valid JSON ({error}); quote strings, e.g. '\"hello\"'"
        ) from None


def _write_line(stream: TextIO, value: Any) -> None:
    try:
        text = orjson.dumps(value).decode()
    except TypeError:  # integers beyond 64 bits
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    stream.write(text + "\n")
    stream.flush()


def _silence_stdout() -> None:
    """After a broken pipe, keep the interpreter from complaining at exit."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


class _stop_on_signals:  # noqa: N801 - used as a context manager, like a function
    """Turn SIGINT and SIGTERM into setting ``done`` (a clean exit, sockets closed)."""

    def __init__(self, done: threading.Event) -> None:
        self._done = done
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._done.set()

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
