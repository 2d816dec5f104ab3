"""The control API the CLI drives: login, logout, status, tokens, reload.

It answers on the control channel only (the Unix socket, to processes of the daemon's
own user: see channel.py); the guard refuses it on TCP, and every route checks again.
The credentials endpoint itself lives in `endpoint.py`.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Awaitable, Callable

from . import __version__
from .channel import PEER_KEY, is_control
from .console import MAX_CONSOLE_SECONDS, MIN_CONSOLE_SECONDS, sign_in
from .control_router import Call, ControlError, ControlRouter, Handler, Route
from .errors import BrokerError
from .probes import ProbeChallenges
from .leases import TokenLeases, holder_of
from .names import PROFILE_NAME_CHARS
from .request_fields import Body, Field, Flag, Number, Text, TextList
from .sessions import SessionManager
from .tokens import NAME as TOKEN_NAME, TokensNotSaved, TokenStore

__all__ = ["ControlError", "build_control_api"]

PROFILE_NAME = Text(pattern=f"^{PROFILE_NAME_CHARS}$")

ERROR_STATUSES = {
    400: "a malformed request",
    401: "not on the control channel",
    403: "what the user must fix: login, profile, STS refusal",
    503: "STS unavailable, or the state directory cannot be written: retry",
}

LOGIN = Body("LoginRequest", {
    "profile": Field(PROFILE_NAME, required=True),
    "code": Field(Text(pattern=r"^[0-9]{6}$"), nullable=True),
})
LOGOUT = Body("LogoutRequest", {"profile": Field(PROFILE_NAME, nullable=True)})  # none: every profile
TOKEN = Body("TokenRequest", {
    "profiles": Field(TextList(max_items=64), default=[]),
    # A token for every profile is asked for by name, never the result of an empty list.
    "all_profiles": Field(Flag(), default=False),
    "name": Field(Text(pattern=f"^{TOKEN_NAME.pattern}$"), nullable=True),
    "ttl_seconds": Field(Number(above=0, at_most=366 * 86400), nullable=True),
    # Revoke the token once the calling process has ended (`rolebroker exec`).
    "bind_to_caller": Field(Flag(), default=False),
    # Hand out the token last minted for this purpose while most of its life is ahead (`env`).
    "reuse": Field(Text(pattern=r"^[a-z0-9-]{1,32}$"), nullable=True),
})
CONSOLE = Body("ConsoleRequest", {
    "profile": Field(PROFILE_NAME, required=True),
    "duration_seconds": Field(Number(whole=True, at_least=MIN_CONSOLE_SECONDS, at_most=MAX_CONSOLE_SECONDS),
                              nullable=True),
    # The CLI's ROLEBROKER_SIGNIN_URL, if set (the daemon may not share the shell's environment).
    "signin_url": Field(Text(max_length=2048), nullable=True),
})
ENV_TARGET = Field(Text(pattern="^(host|docker)$"), default="host")


def _error_answer(exc: Exception) -> tuple[int, str, str] | None:
    if isinstance(exc, TokensNotSaved):
        # 503: the state directory could not take the change (the message says whether it may still
        # land); the same call works once the directory is writable.
        return 503, "StateNotSaved", str(exc)
    if isinstance(exc, BrokerError):
        return exc.status, exc.code, exc.message
    return None


def build_control_api(sessions: SessionManager, tokens: TokenStore,
                      describe_env: Callable[[str, str], dict[str, Any]],
                      reload: Callable[[], Awaitable[dict[str, Any]]],
                      config_problem: Callable[[], str | None] = lambda: None,
                      leases: TokenLeases | None = None, probes: ProbeChallenges | None = None) -> ControlRouter:
    leases = leases or TokenLeases(tokens)
    probes = probes or ProbeChallenges()

    def control_only(handler: Handler) -> Handler:
        async def checked(call: Call) -> dict[str, Any]:
            # The guard already keeps TCP out; a second look costs nothing and guards refactors.
            if not is_control(call.scope):
                raise ControlError(401, "ControlChannelOnly",
                                   "the control API answers on the daemon's Unix socket only: use the rolebroker CLI")
            return await handler(call)
        return checked

    async def health(_: Call) -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    async def status(_: Call) -> dict[str, Any]:
        return {
            "now": sessions.clock.now(),
            "config_error": config_problem(),
            "config_files": [sessions.config.files.config_file, sessions.config.files.credentials_file],
            "tokens_error": tokens.problem,
            "profiles": [row.__dict__ for row in sessions.status()],
        }

    async def login(call: Call) -> dict[str, Any]:
        result = await sessions.login(call.body["profile"], call.body["code"])
        return result.__dict__

    async def logout(call: Call) -> dict[str, Any]:
        # A session kept in the keyring is gone from there too, or the user hears why not.
        wiped, problems = await sessions.logout(call.body["profile"])
        return {"wiped": wiped, "keyring_problems": problems}

    async def profile_session(call: Call) -> dict[str, Any]:
        """Whether a profile needs a login now (the CLI asks before `exec` and `env`)."""
        profile = call.path["profile"]
        sessions.plan(profile)  # 4xx for an unknown or broken profile
        row = next(r for r in sessions.status() if r.profile == profile)
        return {"now": sessions.clock.now(), **row.__dict__}

    async def profile_env(call: Call) -> dict[str, Any]:
        return describe_env(call.path["profile"], call.query["target"])  # 4xx for an unknown or broken profile

    async def create_token(call: Call) -> dict[str, Any]:
        request = call.body
        if bool(request["profiles"]) == request["all_profiles"]:
            raise ControlError(400, "BadTokenRequest",
                               "name the profiles the token may read (\"profiles\": [\"dev\"]), or ask for "
                               "every profile with \"all_profiles\": true (the CLI's --all-profiles), not both")
        for profile in request["profiles"]:
            sessions.plan(profile)
        profiles = tuple(sorted(set(request["profiles"])))
        if request["reuse"] is None:
            return await mint(call, profiles)
        async with leases.minting(request["reuse"], profiles):
            kept = leases.reuse(request["reuse"], profiles, request["ttl_seconds"])
            if kept is not None:
                return {**_token_answer(*kept), "reused": True}  # a failing caller must not revoke it
            return await mint(call, profiles)

    async def mint(call: Call, profiles: tuple[str, ...]) -> dict[str, Any]:
        request = call.body
        ttl, reuse = request["ttl_seconds"], request["reuse"]
        holder = None
        if request["bind_to_caller"]:
            holder = holder_of(call.scope[PEER_KEY].pid)
            if holder is None:
                raise ControlError(400, "BadTokenRequest", "the calling process has already ended")
        try:
            token, record = await tokens.create_async(request["name"], profiles, ttl, holder)
        except ValueError as exc:
            raise ControlError(400, "BadTokenRequest", str(exc)) from None
        if reuse is not None:
            leases.remember(reuse, profiles, ttl, token, record)
        return {**_token_answer(token, record), "reused": False}

    async def create_probe(_: Call) -> dict[str, Any]:
        """A challenge to send to an address (the ECS port): only this daemon answers it."""
        probe, answer = probes.create()
        return {"probe": probe, "answer": answer}

    async def list_tokens(_: Call) -> dict[str, Any]:
        return {"tokens": [{"name": r.name, "profiles": list(r.profiles), "created_at": r.created_at,
                            "expires_at": r.expires_at, "last_used_at": tokens.last_used.get(r.name)}
                           for r in tokens.records()]}

    async def revoke_token(call: Call) -> dict[str, Any]:
        name = call.path["name"]
        if not await tokens.revoke_async(name):
            raise ControlError(400, "UnknownToken", f"no token named {name!r}; `rolebroker token list` shows them")
        return {"revoked": name}

    async def console(call: Call) -> dict[str, Any]:
        # The daemon signs in with the role's credentials itself: only the URL comes back.
        body = call.body
        return await sign_in(sessions, body["profile"], body["duration_seconds"], body["signin_url"])

    async def reload_config(_: Call) -> dict[str, Any]:
        return await reload()

    routes = [
        Route("GET", "/v1/health", health, "the daemon is up, and its version"),
        Route("GET", "/v1/status", control_only(status), "every profile: sessions, credentials, problems"),
        Route("POST", "/v1/login", control_only(login), "start the MFA session a profile needs", body=LOGIN),
        Route("POST", "/v1/logout", control_only(logout), "forget a profile's sessions, or every one", body=LOGOUT),
        Route("GET", "/v1/profiles/{profile}/session", control_only(profile_session),
              "whether a profile needs a login now"),
        Route("GET", "/v1/profiles/{profile}/env", control_only(profile_env),
              "the environment a client needs for a profile", query={"target": ENV_TARGET}),
        Route("POST", "/v1/tokens", control_only(create_token), "a client token for some profiles", body=TOKEN),
        Route("GET", "/v1/tokens", control_only(list_tokens), "the client tokens, without their values"),
        Route("DELETE", "/v1/tokens/{name}", control_only(revoke_token), "revoke a client token"),
        Route("POST", "/v1/probes", control_only(create_probe), "a challenge only this daemon answers"),
        Route("POST", "/v1/console", control_only(console), "a console sign-in URL for a profile", body=CONSOLE),
        Route("POST", "/v1/reload", control_only(reload_config), "read the AWS config files again"),
    ]
    router = ControlRouter(routes, _error_answer, "rolebroker", __version__, ERROR_STATUSES)

    async def openapi(_: Call) -> dict[str, Any]:
        return router.openapi()

    router.routes.append(Route("GET", "/openapi.json", control_only(openapi), "this document"))
    return router


def _token_answer(token: str, record: Any) -> dict[str, Any]:
    return {"token": token, "name": record.name, "profiles": list(record.profiles), "expires_at": record.expires_at}
