"""``Authenticator``: the one object the server wires in for accounts and tokens.

::

    auth = Authenticator(store.accounts, config.auth)
    await auth.start()              # loads (or creates) the shared signing secrets
    add_routes(app, auth)           # the PocketBase-style auth REST routes (``routes``)
    ...
    identity = await auth.identify(request)   # or identify(request) anywhere in the app

The HTTP API and the WebSocket handshake resolve identities the same way:
see ``identity`` for the carriers and the cookie rule, ``tokens`` for what a
valid token is, and ``external`` for the tokens of the user's own backend
(accepted where an identity is asked for, never for the account routes).
"""

from __future__ import annotations

import secrets

from aiohttp import web

from ..config import AuthSettings
from ..storage.base import AccountStore, AuthRecord
from .external import ExternalTokens
from .identity import cookie_origin_allowed, find_token
from .passwords import PasswordHasher
from .ratelimit import SigninLimiter
from .tokens import Identity, TokenSigner, TokenSource, Verified


class Authenticator:
    """Accounts, tokens and identities for one server node.

    Args:
        accounts: where accounts and the shared signing secrets live.
        settings: token lifetime, sign-up switch, cookie origins, sign-in limits.
        hasher: the bcrypt hasher (tests pass one with fewer rounds).
    """

    def __init__(
        self,
        accounts: AccountStore,
        settings: AuthSettings,
        *,
        hasher: PasswordHasher | None = None,
    ) -> None:
        self.accounts = accounts
        self.settings = settings
        self.hasher = hasher or PasswordHasher()
        self.tokens = TokenSigner(accounts, ttl=settings.token_ttl)
        self.limiter = SigninLimiter(
            per_address=settings.failed_signins_per_address,
            per_identity=settings.failed_signins_per_identity,
            window=settings.failed_signin_window.total_seconds(),
        )
        self.external = ExternalTokens(settings.external) if settings.external.enabled else None
        """Verifier of the user's backend's tokens; ``None`` unless configured."""
        self._decoy_hash: str | None = None

    async def start(self) -> None:
        """Load the signing secrets, creating them if no node has yet.

        Call once before serving. Raises ``StoreError`` if the store fails.
        """
        await self.tokens.load_secrets()
        # A hash with the current cost to check unknown emails against, so that
        # "no such account" takes as long as "wrong password".
        self._decoy_hash = await self.hasher.hash(secrets.token_urlsafe(16))

    # --- tokens and identities ------------------------------------------------------

    def issue_token(self, record: AuthRecord) -> str:
        """A fresh auth token for ``record``."""
        return self.tokens.issue(record)

    async def verify_token(self, token: str, *, source: TokenSource = "header") -> Identity | None:
        """The identity ``token`` proves, or ``None`` (invalid, expired, revoked...).

        Raises ``StoreError`` only when the account store fails.
        """
        verified = await self.tokens.verify(token, source=source)
        if verified is not None:
            return verified.identity
        if self.external is not None:
            return await self.external.verify(token, source=source)
        return None

    def _token_of(
        self, request: web.BaseRequest, allow_query_and_cookie: bool
    ) -> tuple[str, TokenSource] | None:
        """The token ``request`` carries and where, if it may be used."""
        found = find_token(request, allow_query_and_cookie=allow_query_and_cookie)
        if found is None:
            return None
        if found[1] == "cookie" and not cookie_origin_allowed(request, self.settings.origins):
            return None
        return found

    async def resolve(
        self, request: web.BaseRequest, *, allow_query_and_cookie: bool = True
    ) -> Verified | None:
        """Like ``identify`` for the built-in tokens, and also return their record.

        External tokens have no record here: they resolve to ``None``, so the
        account routes never act for them.
        """
        found = self._token_of(request, allow_query_and_cookie)
        if found is None:
            return None
        return await self.tokens.verify(found[0], source=found[1])

    async def identify(
        self, request: web.BaseRequest, *, allow_query_and_cookie: bool = True
    ) -> Identity | None:
        """Who sent ``request``; ``None`` for anonymous.

        Reads the ``Authorization`` header, then (unless
        ``allow_query_and_cookie`` is false) the ``token`` query parameter,
        then the ``pb_auth`` cookie; the first one present decides, and a
        missing, invalid or expired token means anonymous, never an error. A
        cookie token is ignored on cross-site requests (an ``Origin`` that is
        neither the server's nor listed in ``AuthSettings.origins``). With
        ``AuthSettings.external`` configured, a token that is not a built-in
        one is checked as one of the user's backend (see ``external``).

        Raises ``StoreError`` only when the account store fails.
        """
        found = self._token_of(request, allow_query_and_cookie)
        if found is None:
            return None
        return await self.verify_token(found[0], source=found[1])

    async def identify_header(self, request: web.BaseRequest) -> Identity | None:
        """``identify`` from the ``Authorization`` header alone (for REST routes)."""
        return await self.identify(request, allow_query_and_cookie=False)

    # --- passwords --------------------------------------------------------------------

    async def check_password(self, record: AuthRecord | None, password: str) -> bool:
        """Whether ``password`` is ``record``'s; ``False`` for no record, in the same time."""
        if record is None:
            if self._decoy_hash is not None:
                await self.hasher.verify(password, self._decoy_hash)
            return False
        return await self.hasher.verify(password, record.password_hash)


AUTHENTICATOR_KEY = web.AppKey("bosbase_pubsub.authenticator", Authenticator)
"""Where ``routes.add_routes`` leaves the authenticator in the application."""


async def identify(request: web.Request, *, allow_query_and_cookie: bool = True) -> Identity | None:
    """``Authenticator.identify`` with the authenticator of the request's application.

    Raises ``RuntimeError`` if ``add_routes(app, authenticator)`` was not called
    on the application (or a parent of it).
    """
    try:
        authenticator = request.config_dict[AUTHENTICATOR_KEY]
    except KeyError:
        raise RuntimeError("add_routes(app, authenticator) was not called") from None
    return await authenticator.identify(request, allow_query_and_cookie=allow_query_and_cookie)
