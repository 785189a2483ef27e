"""The ``bosbase-pubsub`` command line.

Every ``serve`` option can also come from an environment variable (named in
``--help``); a flag wins over the variable, the variable over the default.
Server modules are imported only by the commands that need them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server.config import ExternalAuth, ServerConfig

ENV_PREFIX = "BOSBASE_PUBSUB_"


def _size(text: str) -> int:
    """Read ``4MiB``, ``512KiB``, ``1048576`` into bytes."""
    units = {"kib": 1024, "mib": 1024**2, "gib": 1024**3, "kb": 1000, "mb": 1000**2, "b": 1}
    lowered = text.strip().lower()
    for suffix, factor in units.items():
        if lowered.endswith(suffix) and lowered[: -len(suffix)].strip().isdigit():
            return int(lowered[: -len(suffix)]) * factor
    if lowered.isdigit():
        return int(lowered)
    raise argparse.ArgumentTypeError(f"invalid size {text!r} (use e.g. 4MiB, 512KiB or bytes)")


def _frame_size(text: str) -> int:
    """A frame cap that still lets every publish the contract allows get an answer."""
    from .protocol import MAX_PAYLOAD_BYTES

    value = _size(text)
    least = MAX_PAYLOAD_BYTES + 16 * 1024  # the largest allowed data and its envelope
    if value < least:
        raise argparse.ArgumentTypeError(
            f"must be at least {least // 1024}KiB (256 KiB of data and its envelope), got {text}"
        )
    return value


def _networks(text: str) -> str:
    """Check ``--trusted-proxies`` here, so that a typo is a usage error; kept as text."""
    from .server.proxies import parse_networks

    parse_networks(text)
    return text


def _workers(text: str) -> int:
    """``auto`` (0: decided by the store in ``_run_serve``) or a number of processes."""
    return 0 if text.strip().lower() == "auto" else _positive_int(text)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean {text!r} (use true or false)")


def _argument_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """Turn a parser's ``ValueError`` into argparse's clear usage error."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from error

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def _option(
    parser: argparse.ArgumentParser,
    flag: str,
    *,
    default: str,
    help: str,
    type: Callable[[str], Any] = str,
    metavar: str | None = None,
    aliases: Sequence[str] = (),
) -> None:
    """Add ``flag`` (and its ``aliases``) whose default comes from ``BOSBASE_PUBSUB_<FLAG>``."""
    env = ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()
    parser.add_argument(
        flag,
        *aliases,
        # argparse runs ``type`` on string defaults too, so a bad variable
        # fails like a bad flag.
        default=os.environ.get(env, default),
        type=_argument_type(type),
        metavar=metavar,
        help=f"{help} (env {env}; default: {default or 'none'})",
    )


def _add_storage_options(parser: argparse.ArgumentParser) -> None:
    _option(parser, "--dir", default="pb_data", help="data folder", metavar="PATH")
    _option(
        parser,
        "--db",
        default="",
        help="store URL: postgres://USER:PASSWORD@HOST:PORT/DB to share one database"
        " between nodes, or nats://HOST:4222 (tls:// for TLS) to share a NATS JetStream"
        " server (also spelled --store); empty means the SQLite file DIR/data.db",
        metavar="URL",
        aliases=("--store",),
    )


def _add_serve_options(parser: argparse.ArgumentParser) -> None:
    from .server.config import parse_address, parse_duration

    duration = _argument_type(parse_duration)
    _option(parser, "--http", default="127.0.0.1:8090", help="address to listen on",
            type=parse_address, metavar="HOST:PORT")  # fmt: skip
    _add_storage_options(parser)
    _option(parser, "--workers", default="auto", type=_workers,
            help="worker processes sharing the port, each a node of the cluster (needs"
            " --db postgres://... or nats://...); auto: one per usable CPU on PostgreSQL"
            " or NATS, 1 on SQLite",
            metavar="N")  # fmt: skip
    _option(parser, "--sqlite-synchronous", default="normal", type=_sqlite_synchronous,
            help="normal: acked messages survive a crash of the process; full: also a"
            " power cut (fsync per commit, slower)", metavar="MODE")  # fmt: skip
    _option(parser, "--retention", default="24h", type=duration,
            help="delete messages older than this", metavar="DURATION")  # fmt: skip
    _option(parser, "--prune-interval", default="1m", type=duration,
            help="how often old messages are deleted", metavar="DURATION")  # fmt: skip
    _option(parser, "--token-ttl", default="7d", type=duration,
            help="lifetime of the auth tokens issued", metavar="DURATION")  # fmt: skip
    _option(parser, "--signup", default="true", type=_boolean,
            help="let anyone create a users account (use --no-signup to turn off)",
            metavar="BOOL")  # fmt: skip
    parser.add_argument("--no-signup", dest="signup", action="store_false",
                        help="same as --signup false")  # fmt: skip
    _option(parser, "--origins", default="",
            help="comma-separated origins allowed by CORS and to use the pb_auth cookie;"
            " empty: CORS open to all, cookie from the own origin only",
            metavar="ORIGINS")  # fmt: skip
    _option(parser, "--max-topic-length", default="256", type=_positive_int,
            help="longest topic name, in characters", metavar="N")  # fmt: skip
    _option(parser, "--max-subscriptions", default="1000", type=_positive_int,
            help="topics one connection may subscribe to", metavar="N")  # fmt: skip
    _option(parser, "--publish-rate", default="0", type=_non_negative_float,
            help="opt-in: publishes per second allowed per connection, the rest refused"
            " (0: no limit; a fast publisher is slowed by backpressure instead)",
            metavar="N")  # fmt: skip
    _option(parser, "--publish-burst", default="2000", type=_positive_int,
            help="with --publish-rate: publishes a connection may make at once above the rate",
            metavar="N")  # fmt: skip
    _option(parser, "--max-publishes-in-flight", default="256", type=_positive_int,
            help="publishes per connection waiting for their commit; at this many the"
            " socket is not read until one is answered (backpressure)", metavar="N")  # fmt: skip
    _option(parser, "--max-frame-size", default="1MiB", type=_frame_size,
            help="largest incoming WebSocket frame, closed with 1009 above it (data over"
            " 256 KiB in a smaller frame gets 'payload too large' instead)",
            metavar="SIZE")  # fmt: skip
    _option(parser, "--max-connections-per-address", default="10000", type=_non_negative_int,
            help="concurrent WebSocket connections per client address (a NAT or a load"
            " balancer puts many users behind one; 0: no limit)", metavar="N")  # fmt: skip
    _option(parser, "--rules", default="",
            help="TOML file of topic rules: who may subscribe and publish where (empty:"
            " anyone subscribes, any signed-in identity publishes)", metavar="FILE")  # fmt: skip
    _option(parser, "--trusted-proxies", default="", type=_networks,
            help="comma-separated networks (CIDRs) of reverse proxies whose X-Forwarded-For"
            " names the client, for the per-address limits; empty: the header is ignored",
            metavar="CIDRS")  # fmt: skip
    _option(parser, "--outbound-buffer", default="4MiB", type=_size,
            help="bytes queued for a subscriber that is not reading before it is closed",
            metavar="SIZE")  # fmt: skip
    _option(parser, "--heartbeat", default="30s", type=duration,
            help="WebSocket heartbeat: a silent peer gets a ping, then is dropped (0s: off)",
            metavar="DURATION")  # fmt: skip
    _add_external_auth_options(parser)
    _option(parser, "--failed-signins-per-identity", default="5", type=_positive_int,
            help="failed sign-ins per account within the window before 429",
            metavar="N")  # fmt: skip
    _option(parser, "--failed-signins-per-address", default="20", type=_positive_int,
            help="failed sign-ins per client address within the window before 429",
            metavar="N")  # fmt: skip
    _option(parser, "--failed-signin-window", default="5m", type=duration,
            help="window over which failed sign-ins are counted", metavar="DURATION")  # fmt: skip
    _option(parser, "--shutdown-timeout", default="10s", type=duration,
            help="how long a graceful shutdown may take", metavar="DURATION")  # fmt: skip
    _option(parser, "--log-format", default="text", type=_log_format,
            help="text or json", metavar="FORMAT")  # fmt: skip
    _option(parser, "--log-level", default="info", type=_log_level,
            help="debug, info, warning or error", metavar="LEVEL")  # fmt: skip


def _add_external_auth_options(parser: argparse.ArgumentParser) -> None:
    """Tokens of the user's own backend (``serve`` and ``gentoken``); see ``auth.external``."""
    _option(parser, "--jwt-secret", default="",
            help="accept HS256 tokens of your own backend signed with this shared secret"
            " (at least 32 bytes)", metavar="SECRET")  # fmt: skip
    _option(parser, "--jwks-url", default="",
            help="accept RS256/ES256 tokens of your own backend, checked with the keys"
            " of this JSON Web Key Set", metavar="URL")  # fmt: skip
    _option(parser, "--jwt-issuer", default="",
            help="required iss claim of those tokens (empty: not checked)",
            metavar="ISS")  # fmt: skip
    _option(parser, "--jwt-audience", default="",
            help="required aud claim of those tokens (empty: tokens with an aud are"
            " refused)", metavar="AUD")  # fmt: skip
    _option(parser, "--jwt-user-claim", default="sub",
            help="claim of those tokens holding the user id", metavar="CLAIM")  # fmt: skip
    _option(parser, "--jwt-algorithms", default="",
            help="comma-separated algorithms accepted (empty: HS256 with --jwt-secret,"
            " RS256 and ES256 with --jwks-url)", metavar="ALGS")  # fmt: skip
    _option(parser, "--jwt-collection", default="external",
            help="collection name the identities of those tokens get", metavar="NAME")  # fmt: skip
    _option(parser, "--jwks-timeout", default="5s", type=_parse_duration,
            help="how long a JWKS fetch may take", metavar="DURATION")  # fmt: skip


def _parse_duration(text: str) -> Any:
    from .server.config import parse_duration

    return parse_duration(text)


def external_auth_from_args(args: argparse.Namespace) -> ExternalAuth:
    """The ``ExternalAuth`` that parsed ``--jwt-*`` / ``--jwks-*`` arguments describe."""
    from .server.config import ExternalAuth

    return ExternalAuth(
        secret=args.jwt_secret,
        jwks_url=args.jwks_url,
        issuer=args.jwt_issuer,
        audience=args.jwt_audience,
        user_claim=args.jwt_user_claim,
        algorithms=tuple(a.strip() for a in args.jwt_algorithms.split(",") if a.strip()),
        collection=args.jwt_collection,
        jwks_timeout=args.jwks_timeout.total_seconds(),
    )


def _sqlite_synchronous(text: str) -> str:
    if text.lower() not in ("normal", "full"):
        raise ValueError(f"invalid SQLite synchronous mode {text!r} (use normal or full)")
    return text.lower()


def _log_format(text: str) -> str:
    if text not in ("text", "json"):
        raise ValueError(f"invalid log format {text!r} (use text or json)")
    return text


def _log_level(text: str) -> str:
    if text.lower() not in ("debug", "info", "warning", "error"):
        raise ValueError(f"invalid log level {text!r} (use debug, info, warning or error)")
    return text.lower()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bosbase-pubsub",
        description="A BosBase-compatible realtime publish/subscribe server.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the server",
        description="Run a node: HTTP and WebSocket (/api/pubsub) on one port.",
    )
    _add_serve_options(serve)

    superuser = commands.add_parser("superuser", help="manage superuser accounts")
    superuser_commands = superuser.add_subparsers(dest="action", required=True, metavar="ACTION")
    upsert = superuser_commands.add_parser(
        "upsert", help="create a superuser, or set the password of an existing one"
    )
    upsert.add_argument("email")
    upsert.add_argument("password")
    _add_storage_options(upsert)

    user = commands.add_parser("user", help="manage user accounts")
    user_commands = user.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = user_commands.add_parser("create", help="create a user account")
    create.add_argument("email")
    create.add_argument("password")
    _add_storage_options(create)

    migrate = commands.add_parser(
        "migrate",
        help="copy the accounts and signing secrets to another store",
        description="Copy every account of users and _superusers, with their password"
        " hashes, and the token signing secrets, from one store to another (SQLite ->"
        " PostgreSQL -> NATS): passwords and issued tokens keep working there. Safe to run"
        " again. Messages are not copied (they are transient); clients resuming with a"
        " position of the old store are told to refetch.",
    )
    for end, dest, what in (("from", "source", "copy from"), ("to", "target", "copy to")):
        migrate.add_argument(
            f"--{end}",
            dest=dest,
            required=True,
            metavar="STORE",
            help=f"the store to {what}: a data folder (its SQLite file) or a postgres://,"
            " nats:// or tls:// URL",
        )

    gentoken = commands.add_parser(
        "gentoken",
        help="mint a test token for the configured --jwt-secret",
        description="Print a token as your own backend would mint it for USER, signed"
        " with --jwt-secret (and with --jwt-issuer/--jwt-audience/--jwt-user-claim), for"
        " trying the server's bring-your-own-auth setup.",
    )
    gentoken.add_argument("--user", required=True, metavar="ID", help="the user id claim")
    gentoken.add_argument("--ttl", default="1h", type=_argument_type(_parse_duration),
                          metavar="DURATION", help="token lifetime (default: 1h)")  # fmt: skip
    _add_external_auth_options(gentoken)
    _add_client_commands(commands)
    _add_bench_command(commands)
    return parser


def _add_client_commands(commands: Any) -> None:
    """``sub`` and ``pub``: the Python SDK on the command line (no server modules)."""

    def connection_options(parser: argparse.ArgumentParser) -> None:
        _option(parser, "--url", default="http://127.0.0.1:8090", help="the server",
                metavar="URL")  # fmt: skip
        _option(parser, "--token", default="", help="auth token to use", metavar="TOKEN")
        _option(parser, "--email", default="",
                help="sign in with this email (with --password)", metavar="EMAIL")  # fmt: skip
        _option(parser, "--password", default="", help="password for --email",
                metavar="PASSWORD")  # fmt: skip
        # Trying _superusers first costs a users account one failed sign-in per
        # run (the server limits them per address): scripts should name it.
        _option(parser, "--collection", default="",
                help="auth collection for --email; none: _superusers, then users",
                metavar="NAME")  # fmt: skip
        parser.add_argument("--timeout", default=10.0, type=_argument_type(_positive_float),
                            metavar="SECONDS",
                            help="wait this long for each reply (default: 10)")  # fmt: skip

    sub = commands.add_parser(
        "sub",
        help="print the messages of topics as JSON lines",
        description="Subscribe to TOPICs and print each message as a JSON line"
        " ({id, topic, data, created}) until interrupted. Reconnects on its own.",
    )
    sub.add_argument("topics", nargs="+", metavar="TOPIC")
    sub.add_argument("--count", type=_argument_type(_positive_int), default=0, metavar="N",
                     help="exit after N messages")  # fmt: skip
    connection_options(sub)

    pub = commands.add_parser(
        "pub",
        help="publish JSON on a topic and print the acks",
        description="Publish JSON on TOPIC: the JSON argument, or else each line of"
        " standard input as one message. Prints each ack ({id, topic, created}) as a"
        " JSON line. Publishing needs --token or --email/--password.",
    )
    pub.add_argument("topic", metavar="TOPIC")
    pub.add_argument("data", nargs="?", default=None, metavar="JSON",
                     help='the message, e.g. \'{"text": "hi"}\' (default: read stdin)')  # fmt: skip
    connection_options(pub)


def _bounded(kind: Callable[[str], Any], low: float, high: float) -> Callable[[str], Any]:
    """A ``type`` that also keeps the value within ``[low, high]``."""

    def convert(text: str) -> Any:
        value = kind(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low:g} to {high:g}, got {text}")
        return value

    return convert


def _add_bench_command(commands: Any) -> None:
    """``bench``: load a running server and report (see ``benchmark``)."""
    from .benchmark import MAX_CONNECTIONS, MAX_DURATION, MAX_MESSAGES

    bench = commands.add_parser(
        "bench",
        help="benchmark a running server (fan-out or acked publishes)",
        description="Load a running server from this machine and report deliveries/s, acked"
        " publishes/s, latency percentiles, lost messages and errors. Signs in with --token"
        " or --email/--password, else creates a throwaway users account by sign-up."
        " Exit status: 0, 1 (could not run), 3 (messages lost or errors).",
    )
    _option(bench, "--url", default="http://127.0.0.1:8090", help="the server", metavar="URL")
    _option(bench, "--token", default="", help="auth token to publish with", metavar="TOKEN")
    _option(
        bench,
        "--email",
        default="",
        help="sign in with this email (with --password)",
        metavar="EMAIL",
    )
    _option(bench, "--password", default="", help="password for --email", metavar="PASSWORD")
    _option(
        bench, "--collection", default="users", help="auth collection for --email", metavar="NAME"
    )
    add = bench.add_argument
    add(
        "--mode",
        choices=("fanout", "publish"),
        default="fanout",
        help="fanout: paced publishes to many subscribers; publish: each publisher waits"
        " for its ack before the next (default: fanout)",
    )
    add(
        "--subscribers",
        type=_argument_type(_bounded(int, 0, MAX_CONNECTIONS)),
        default=None,
        metavar="N",
        help="subscriber connections (default: 100 in fanout, 0 in publish)",
    )
    add(
        "--publishers",
        type=_argument_type(_bounded(int, 1, MAX_CONNECTIONS)),
        default=1,
        metavar="N",
        help="publisher connections (default: 1)",
    )
    add(
        "--rate",
        type=_argument_type(_bounded(float, 0.1, 1e7)),
        default=1000.0,
        metavar="N",
        help="fanout: messages per second, all publishers (default: 1000)",
    )
    add(
        "--duration",
        type=_argument_type(_bounded(float, 0.1, MAX_DURATION)),
        default=10.0,
        metavar="SECONDS",
        help="publishing time (default: 10, at most 600)",
    )
    add(
        "--payload",
        type=_argument_type(_bounded(int, 0, 200_000)),
        default=64,
        metavar="BYTES",
        help="padding in each message's data (default: 64)",
    )
    add("--topic", default="", metavar="TOPIC", help="topic (default: a fresh bench/...)")
    add(
        "--max-messages",
        type=_argument_type(_bounded(int, 1, MAX_MESSAGES)),
        default=1_000_000,
        metavar="N",
        help="stop after N publishes (default: 1000000)",
    )
    add(
        "--drain",
        type=_argument_type(_bounded(float, 0.1, 120)),
        default=10.0,
        metavar="SECONDS",
        help="wait at most this long for the last acks and deliveries",
    )
    add("--json", default="", metavar="PATH", help="write the result document here")
    add(
        "--plot",
        default="",
        metavar="PATH",
        help="write a PNG (throughput timeline, latency histogram; needs the [bench] extra)",
    )
    add(
        "--allow-remote",
        action="store_true",
        help="benchmark a server that is not on this machine's loopback",
    )


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """The ``ServerConfig`` that parsed ``serve`` arguments describe."""
    from .server.config import AuthSettings, Limits, Retention, ServerConfig
    from .server.workers import default_workers

    host, port = args.http
    origins = tuple(o.strip().rstrip("/") for o in args.origins.split(",") if o.strip())
    return ServerConfig(
        host=host,
        port=port,
        data_dir=Path(args.dir),
        db_url=args.db or None,
        workers=args.workers or default_workers(args.db or None),
        sqlite_synchronous=args.sqlite_synchronous,
        heartbeat=args.heartbeat.total_seconds(),
        shutdown_timeout=args.shutdown_timeout.total_seconds(),
        log_format=args.log_format,
        log_level=args.log_level,
        trusted_proxies=args.trusted_proxies,
        rules_file=Path(args.rules) if args.rules else None,
        limits=Limits(
            max_topic_length=args.max_topic_length,
            max_subscriptions=args.max_subscriptions,
            publish_rate=args.publish_rate,
            publish_burst=args.publish_burst,
            max_publishes_in_flight=args.max_publishes_in_flight,
            max_frame_bytes=args.max_frame_size,
            max_connections_per_address=args.max_connections_per_address,
            outbound_buffer_bytes=args.outbound_buffer,
        ),
        auth=AuthSettings(
            token_ttl=args.token_ttl,
            signup=args.signup,
            origins=origins,
            failed_signins_per_identity=args.failed_signins_per_identity,
            failed_signins_per_address=args.failed_signins_per_address,
            failed_signin_window=args.failed_signin_window,
            external=external_auth_from_args(args),
        ),
        retention=Retention(keep=args.retention, interval=args.prune_interval),
    )


def _run_serve(args: argparse.Namespace, serve_argv: Sequence[str]) -> int:
    from .server.app import serve
    from .server.logs import configure_logging
    from .server.storage import StoreError
    from .server.workers import Supervisor, WorkerRole

    config = config_from_args(args)
    role = WorkerRole.from_environment()
    configure_logging(
        config.log_format, config.log_level, worker=None if role is None else role.index
    )
    if role is None and config.workers > 1:
        return int(_run(Supervisor(config, config.workers, serve_argv).run()))
    try:
        _run(serve(config, worker=role))
    except (StoreError, OSError) as error:
        # The store cannot be opened or the address is taken: one clear line, no traceback.
        print(f"error: cannot start: {error}", file=sys.stderr)
        return 1
    # Shut down cleanly; closing the loop gave the signals their default action back,
    # and a repeated SIGTERM (a supervisor, or SIGINT then SIGTERM) must not turn the
    # exit into a kill now.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return 0


def _run_account(args: argparse.Namespace) -> int:
    from .server.auth.commands import AccountError, create_user, upsert_superuser
    from .server.storage import StoreError, open_store

    store = open_store(args.db or None, Path(args.dir))

    async def run() -> str:
        await store.open()
        try:
            if args.command == "superuser":
                record = await upsert_superuser(store.accounts, args.email, args.password)
                return f"superuser {record.email} saved (id {record.id})"
            record = await create_user(store.accounts, args.email, args.password)
            return f"user {record.email} created (id {record.id})"
        finally:
            await store.close()

    return _print_result(run, (AccountError, StoreError))


def _run_migrate(args: argparse.Namespace) -> int:
    from .server.auth.commands import copy_accounts
    from .server.storage import Store, StoreError, open_store

    def store_at(place: str) -> Store:
        if "://" in place:
            return open_store(place, Path("."))
        return open_store(None, Path(place))

    if args.source == args.target:
        print("error: --from and --to name the same store", file=sys.stderr)
        return 2
    if "://" not in args.source and not (Path(args.source) / "data.db").is_file():
        print(f"error: no data.db in {args.source} to copy from", file=sys.stderr)
        return 1

    async def run() -> str:
        source, target = store_at(args.source), store_at(args.target)
        await source.open()
        try:
            await target.open()
            try:
                report = await copy_accounts(source.accounts, target.accounts)
            finally:
                await target.close()
        finally:
            await source.close()
        lines = [
            f"{name}: {report.copied[name]} copied, {report.present[name]} already there"
            for name in report.copied
        ]
        lines += [f"not copied, email taken in the target: {item}" for item in report.conflicts]
        lines += [
            f"{name}: the target keeps its own signing secret; tokens issued before do not"
            " verify there (those users sign in again)"
            for name in report.secrets_kept
        ]
        return "\n".join(lines)

    return _print_result(run, (StoreError, ValueError))


def _print_result(
    run: Callable[[], Coroutine[Any, Any, str]], errors: tuple[type[Exception], ...]
) -> int:
    """Print what ``run`` returns (exit status 0), or one of ``errors`` as one line (1)."""
    try:
        print(_run(run()))
    except errors as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def _run(coroutine: Any) -> Any:
    """Run ``coroutine`` on uvloop where it is installed, else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    loop = uvloop.new_event_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


def _run_gentoken(args: argparse.Namespace) -> int:
    from .server.auth.external import mint

    try:
        print(mint(external_auth_from_args(args), args.user, ttl=args.ttl.total_seconds()))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if getattr(args, "db", None):
        from .server.storage import check_store_url

        try:
            check_store_url(args.db)
        except ValueError as error:
            parser.error(f"--db: {error}")  # exits with 2 and the usage line
    if args.command in ("serve", "gentoken"):
        try:
            external_auth_from_args(args).check()
            if args.command == "serve" and args.workers:
                from .server.workers import check_workers

                check_workers(args.workers, args.db or None)
            if args.command == "serve" and args.rules:
                from .server.rules import load_rules

                load_rules(Path(args.rules))  # a bad file stops the start here, named
        except ValueError as error:
            parser.error(str(error))  # exits with 2 and the usage line
    if args.command == "gentoken":
        return _run_gentoken(args)
    if args.command == "migrate":
        return _run_migrate(args)
    if args.command == "serve":
        # What a worker is started with: the same options (the supervisor adds its own).
        return _run_serve(args, argv[argv.index("serve") + 1 :])
    if args.command == "bench":
        from .benchmark import main as bench

        if args.subscribers is not None and args.subscribers + args.publishers > 10_000:
            parser.error("--subscribers and --publishers: at most 10000 connections in all")
        return bench(args)
    if args.command in ("sub", "pub"):
        from .client._cli import run

        return int(run(args))
    return _run_account(args)


if __name__ == "__main__":
    sys.exit(main())
