"""The container-credentials endpoint as a bare ASGI app.

Every AWS call a client makes may start here, so this path skips the framework:
no routing table, no model validation, no re-serialization. The body was built once
when the credentials were issued. Anything that is not a credentials request falls
through to the control API.
"""

from __future__ import annotations

import json
import logging
import shlex
import re
from typing import Any
from collections.abc import Awaitable, Callable, MutableMapping

from .channel import is_control
from .probes import ProbeChallenges, is_probe
from .errors import BrokerError
from .names import PROFILE_NAME, PROFILE_NAME_RULE
from .sessions import SessionManager
from .tokens import TokenStore
from .wire import Message, error_body, response_messages

log = logging.getLogger("rolebroker.endpoint")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CREDENTIALS_PREFIX = "/v1/credentials/"
MAX_TOKEN_LENGTH = 512
# A token as the ECS form carries it: one path segment of URL-safe characters.
_PATH_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,512}")


class CredentialsEndpoint:
    def __init__(self, sessions: SessionManager, tokens: TokenStore, fallback: ASGIApp,
                 on_auth_failure: Callable[[Scope], Awaitable[tuple[int, bytes] | None]] | None = None,
                 on_refused: Callable[[Scope, str, str], None] | None = None,
                 probes: ProbeChallenges | None = None) -> None:
        self.sessions = sessions
        # Called before a 401 is sent: the guard's throttle holds answers to guessers, or
        # returns the answer to send instead (429). Failures are counted there, not logged here.
        self.on_auth_failure = on_auth_failure
        # Notes a refusal for the periodic per-peer summary (a log line per request would let
        # any client flood the log).
        self.on_refused = on_refused
        self.tokens = tokens
        self.fallback = fallback
        self.probes = probes or ProbeChallenges()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(CREDENTIALS_PREFIX[:-1]):
            messages = self.cached_answer(scope)
            if messages is None:
                status, body = await self.respond(scope)
                if status == 401 and self.on_auth_failure is not None:
                    instead = await self.on_auth_failure(_without_path_token(scope))
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
        profile, token = _credentials_request(scope)
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
        profile, token = _credentials_request(scope)
        if not PROFILE_NAME.fullmatch(profile):
            # Checked before anything is logged: a name with CR/LF could forge log lines.
            return 400, error_body("BadProfileName", "the URL must be /v1/credentials/PROFILE (or "
                                   "/v1/credentials/PROFILE/TOKEN), with the profile name percent-encoded "
                                   f"({PROFILE_NAME_RULE})")
        if is_control(scope):
            return await self._serve(profile)  # the user's own CLI (credential-process) reads any profile
        if token is None or len(token) > MAX_TOKEN_LENGTH:
            return 401, error_body("MissingToken", "no Authorization token (AWS_CONTAINER_AUTHORIZATION_TOKEN): "
                                   + _token_advice(profile, "one"))
        if is_probe(token):
            # `rolebroker env` asking whether this address reaches us: the answer proves it does.
            answer = self.probes.answer(token.decode("ascii", "replace"))
            if answer is not None:
                return 200, json.dumps({"probe": answer}).encode()
        record = self.tokens.lookup(token)
        if record is None:
            return 401, error_body("InvalidToken",
                                   f"the token is unknown, revoked or expired: {_token_advice(profile, 'a new')}")
        if not record.allows(profile):
            if self.on_refused is not None:
                self.on_refused(scope, "requests for a profile their token may not read",
                                f"token {record.name!r} asked for {profile!r}")
            return 403, error_body(
                "ProfileNotAllowed",
                f"token {record.name!r} serves only {', '.join(record.profiles)}, not {profile!r}: get a token for "
                f"{profile} with `eval \"$(rolebroker env {shlex.quote(profile)})\"` (or `rolebroker token create "
                f"--profile {shlex.quote(profile)}`)",
            )
        return await self._serve(profile)

    async def _serve(self, profile: str) -> tuple[int, bytes]:
        try:
            return 200, await self.sessions.credentials_body(profile)
        except BrokerError as exc:
            return exc.status, error_body(exc.code, exc.message)


def _token_advice(profile: str, which: str) -> str:
    """What to do about a 401. The daemon cannot tell a token that came from a file: some SDKs
    (the AWS CLI v2 of Debian and Ubuntu, Go v1 and v2) never read the file variable, and send
    no token or a stale one from AWS_CONTAINER_AUTHORIZATION_TOKEN."""
    return (f"get {which} with `eval \"$(rolebroker env {shlex.quote(profile)})\"`. "
            "If you used `--token-file`: some SDKs "
            "(AWS CLI v2 from Debian/Ubuntu, Go) do not read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE; give them the "
            "token itself (`rolebroker env` without --token-file)")


def _credentials_request(scope: Scope) -> tuple[str, bytes | None]:
    """(profile, token) of a credentials request. The token is the Authorization header, or
    the path's last segment in the ECS form /v1/credentials/PROFILE/TOKEN: SDKs reading
    AWS_CONTAINER_CREDENTIALS_RELATIVE_URI send no header, so the path is the capability
    (and is therefore never logged)."""
    rest = scope["path"][len(CREDENTIALS_PREFIX):]
    profile, ecs_form, path_token = rest.partition("/")
    if ecs_form:
        if not path_token:
            return profile, None
        if not _PATH_TOKEN.fullmatch(path_token):
            return "", None  # "../..", more segments: not a credentials URL at all (400)
        return profile, path_token.encode()
    return profile, _header(scope, b"authorization")


def _without_path_token(scope: Scope) -> Scope:
    """The request as others may see it (the failure throttle describes requests in its log):
    an ECS-form path with its token cut off."""
    profile, ecs_form, _ = scope["path"][len(CREDENTIALS_PREFIX):].partition("/")
    if not ecs_form:
        return scope
    return {**scope, "path": f"{CREDENTIALS_PREFIX}{profile}/<token>", "raw_path": b""}


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None
