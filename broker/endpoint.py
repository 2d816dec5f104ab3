"""The container-credentials endpoint as a bare ASGI app.

Every AWS call a client makes may start here, so this path skips the framework:
no routing table, no model validation, no re-serialization. The body was built once
when the credentials were issued. Anything that is not a credentials request falls
through to the control API.
"""

from __future__ import annotations

import logging
from typing import Any
from collections.abc import Awaitable, Callable, MutableMapping

from broker.channel import is_control
from broker.errors import BrokerError
from broker.names import PROFILE_NAME, PROFILE_NAME_RULE
from broker.sessions import SessionManager
from broker.tokens import TokenStore
from broker.wire import Message, error_body, response_messages

log = logging.getLogger("rolebroker.endpoint")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CREDENTIALS_PREFIX = "/v1/credentials/"
MAX_TOKEN_LENGTH = 512


class CredentialsEndpoint:
    def __init__(self, sessions: SessionManager, tokens: TokenStore, fallback: ASGIApp,
                 on_auth_failure: Callable[[Scope], Awaitable[tuple[int, bytes] | None]] | None = None,
                 on_refused: Callable[[Scope, str, str], None] | None = None) -> None:
        self.sessions = sessions
        # Called before a 401 is sent: the guard's throttle holds answers to guessers, or
        # returns the answer to send instead (429). Failures are counted there, not logged here.
        self.on_auth_failure = on_auth_failure
        # Notes a refusal for the periodic per-peer summary (a log line per request would let
        # any client flood the log).
        self.on_refused = on_refused
        self.tokens = tokens
        self.fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(CREDENTIALS_PREFIX[:-1]):
            messages = self.cached_answer(scope)
            if messages is None:
                status, body = await self.respond(scope)
                if status == 401 and self.on_auth_failure is not None:
                    instead = await self.on_auth_failure(scope)
                    if instead is not None:
                        status, body = instead
                messages = response_messages(status, body if scope["method"] != "HEAD" else b"")
                if scope["method"] == "HEAD":  # the length of the body a GET would get
                    messages[0]["headers"] = response_messages(status, body)[0]["headers"]
            await send(messages[0])
            await send(messages[1])
            return
        await self.fallback(scope, receive, send)

    def cached_answer(self, scope: Scope) -> tuple[Message, Message] | None:
        """The common case, with no await at all: a valid token for a profile whose
        credentials are cached. Anything else (None) takes `respond`, which explains itself."""
        if scope["method"] != "GET":
            return None
        profile = scope["path"][len(CREDENTIALS_PREFIX):]
        token = _header(scope, b"authorization")
        if token is None or len(token) > MAX_TOKEN_LENGTH or not PROFILE_NAME.fullmatch(profile):
            return None
        record = self.tokens.lookup(token)
        if record is None or not record.allows(profile):
            return None
        issued = self.sessions.cached(profile)
        return issued.messages if issued is not None else None

    async def respond(self, scope: Scope) -> tuple[int, bytes]:
        if scope["method"] not in ("GET", "HEAD"):
            return 405, error_body("MethodNotAllowed", "use GET")
        profile = scope["path"][len(CREDENTIALS_PREFIX):]
        if not PROFILE_NAME.fullmatch(profile):
            # Checked before anything is logged: a name with CR/LF could forge log lines.
            return 400, error_body("BadProfileName", "the URL must be /v1/credentials/PROFILE, with the profile "
                                   f"name percent-encoded ({PROFILE_NAME_RULE})")
        if is_control(scope):
            return await self._serve(profile)  # the user's own CLI (credential-process) reads any profile
        token = _header(scope, b"authorization")
        if token is None or len(token) > MAX_TOKEN_LENGTH:
            return 401, error_body(
                "MissingToken",
                "no Authorization token: set AWS_CONTAINER_AUTHORIZATION_TOKEN, e.g. with "
                f"`eval \"$(rolebroker env {profile})\"`",
            )
        record = self.tokens.lookup(token)
        if record is None:
            return 401, error_body(
                "InvalidToken",
                f"the token is unknown, revoked or expired: get a new one with `rolebroker env {profile}`",
            )
        if not record.allows(profile):
            if self.on_refused is not None:
                self.on_refused(scope, "requests for a profile their token may not read",
                                f"token {record.name!r} asked for {profile!r}")
            return 403, error_body(
                "ProfileNotAllowed",
                f"token {record.name!r} is not allowed profile {profile!r}; "
                f"it serves {', '.join(record.profiles)}",
            )
        return await self._serve(profile)

    async def _serve(self, profile: str) -> tuple[int, bytes]:
        try:
            return 200, await self.sessions.credentials_body(profile)
        except BrokerError as exc:
            return exc.status, error_body(exc.code, exc.message)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None
