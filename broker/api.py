"""The control API the CLI drives: login, logout, status, tokens, reload.

It answers on the control channel only (the Unix socket, to processes of the daemon's
own user: see channel.py); the guard refuses it on TCP, and every route checks again.
The credentials endpoint itself lives in `endpoint.py`.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Awaitable, Callable

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__
from .channel import PEER_KEY, is_control
from .console import MAX_CONSOLE_SECONDS, MIN_CONSOLE_SECONDS, sign_in
from .errors import BrokerError
from .probes import ProbeChallenges
from .leases import TokenLeases, holder_of
from .names import PROFILE_NAME_CHARS
from .sessions import SessionManager
from .tokens import TokensNotSaved, TokenStore

PROFILE_NAME = f"^{PROFILE_NAME_CHARS}$"  # pydantic's regex engine: $ is the end of the text


class ControlError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class ApiError(BaseModel):
    """Every error: a stable code and a message that says what to do (twice, for the JS SDK)."""

    code: str
    message: str
    Code: str
    Message: str


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ApiError, "description": "a malformed request"},
    401: {"model": ApiError, "description": "not on the control channel"},
    403: {"model": ApiError, "description": "what the user must fix: login, profile, STS refusal"},
    503: {"model": ApiError, "description": "STS unavailable, or the state directory cannot be written: retry"},
}


class LoginRequest(BaseModel):
    profile: str = Field(pattern=PROFILE_NAME)
    code: str | None = Field(default=None, pattern=r"^[0-9]{6}$")


class LogoutRequest(BaseModel):
    profile: str | None = Field(default=None, pattern=PROFILE_NAME)


class TokenRequest(BaseModel):
    profiles: list[str] = Field(default_factory=list, max_length=64)
    # A token for every profile is asked for by name, never the result of an empty list.
    all_profiles: bool = False
    name: str | None = Field(default=None, max_length=64)
    ttl_seconds: float | None = Field(default=None, gt=0, le=366 * 86400)
    # Revoke the token once the calling process has ended (`rolebroker exec`).
    bind_to_caller: bool = False
    # Hand out the token last minted for this purpose while most of its life is ahead (`env`).
    reuse: str | None = Field(default=None, pattern=r"^[a-z0-9-]{1,32}$")


class ConsoleRequest(BaseModel):
    profile: str = Field(pattern=PROFILE_NAME)
    duration_seconds: int | None = Field(default=None, ge=MIN_CONSOLE_SECONDS, le=MAX_CONSOLE_SECONDS)
    # The CLI's ROLEBROKER_SIGNIN_URL, if set (the daemon may not share the shell's environment).
    signin_url: str | None = Field(default=None, max_length=2048)


def _json_error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "Code": code, "Message": message},
                        status_code=status)


def _document_errors_not_422(app: FastAPI) -> None:
    """Validation errors are answered as 400 {code, message}: say so in the schema."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    operation.get("responses", {}).pop("422", None)
            schema.get("components", {}).get("schemas", {}).pop("HTTPValidationError", None)
            schema.get("components", {}).get("schemas", {}).pop("ValidationError", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def build_control_api(sessions: SessionManager, tokens: TokenStore,
                      describe_env: Callable[[str, str], dict[str, Any]],
                      reload: Callable[[], Awaitable[dict[str, Any]]],
                      config_problem: Callable[[], str | None] = lambda: None,
                      leases: TokenLeases | None = None, probes: ProbeChallenges | None = None) -> FastAPI:
    app = FastAPI(title="rolebroker", version=__version__, docs_url=None, redoc_url=None,
                  responses=ERROR_RESPONSES)
    _document_errors_not_422(app)
    leases = leases or TokenLeases(tokens)
    probes = probes or ProbeChallenges()

    def require_control(request: Request) -> None:
        # The guard already keeps TCP out; a second look costs nothing and guards refactors.
        if not is_control(request.scope):
            raise ControlError(401, "ControlChannelOnly",
                               "the control API answers on the daemon's Unix socket only: use the rolebroker CLI")

    control = [Depends(require_control)]

    @app.exception_handler(ControlError)
    async def control_error(_: Request, exc: ControlError) -> JSONResponse:
        return _json_error(exc.status, exc.code, exc.message)

    @app.exception_handler(TokensNotSaved)
    async def tokens_not_saved(_: Request, exc: TokensNotSaved) -> JSONResponse:
        # 503: nothing changed, and the same call works once the state directory is writable.
        return _json_error(503, "StateNotSaved", str(exc))

    @app.exception_handler(BrokerError)
    async def broker_error(_: Request, exc: BrokerError) -> JSONResponse:
        return _json_error(exc.status, exc.code, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def framework_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Unknown routes, wrong methods, undecodable bodies: the same shape as every other error.
        reason = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "BadRequest")
        return _json_error(exc.status_code, reason, f"{exc.detail}: see `rolebroker --help` for what the CLI can do")

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Field names only: the rejected values may be codes or tokens.
        fields = ", ".join(".".join(str(p) for p in e.get("loc", ())) for e in exc.errors())
        hint = " (an MFA code is six digits)" if "code" in fields else ""
        return _json_error(400, "BadRequest", f"invalid request fields: {fields}{hint}")

    @app.get("/v1/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    @app.get("/v1/status", dependencies=control)
    async def status() -> dict[str, Any]:
        return {
            "now": sessions.clock.now(),
            "config_error": config_problem(),
            "config_files": [sessions.config.files.config_file, sessions.config.files.credentials_file],
            "tokens_error": tokens.problem,
            "profiles": [row.__dict__ for row in sessions.status()],
        }

    @app.post("/v1/login", dependencies=control)
    async def login(request: LoginRequest) -> dict[str, Any]:
        result = await sessions.login(request.profile, request.code)
        return result.__dict__

    @app.post("/v1/logout", dependencies=control)
    async def logout(request: LogoutRequest) -> dict[str, Any]:
        wiped = sessions.logout(request.profile)
        await sessions.cache_settled()  # a session kept in the keyring is gone from there too
        return {"wiped": wiped}

    @app.get("/v1/profiles/{profile}/session", dependencies=control)
    async def profile_session(profile: str) -> dict[str, Any]:
        """Whether a profile needs a login now (the CLI asks before `exec` and `env`)."""
        sessions.plan(profile)  # 4xx for an unknown or broken profile
        row = next(r for r in sessions.status() if r.profile == profile)
        return {"now": sessions.clock.now(), **row.__dict__}

    @app.get("/v1/profiles/{profile}/env", dependencies=control)
    async def profile_env(profile: str, target: str = Query("host", pattern="^(host|docker)$")) -> dict[str, Any]:
        return describe_env(profile, target)  # 4xx for an unknown or broken profile

    @app.post("/v1/tokens", dependencies=control)
    async def create_token(request: TokenRequest, http: Request) -> dict[str, Any]:
        if bool(request.profiles) == request.all_profiles:
            raise ControlError(400, "BadTokenRequest",
                               "name the profiles the token may read (\"profiles\": [\"dev\"]), or ask for "
                               "every profile with \"all_profiles\": true (the CLI's --all-profiles), not both")
        for profile in request.profiles:
            sessions.plan(profile)
        profiles = tuple(sorted(set(request.profiles)))
        if request.reuse is not None:
            kept = leases.reuse(request.reuse, profiles, request.ttl_seconds)
            if kept is not None:
                return {**_token_answer(*kept), "reused": True}  # a failing caller must not revoke it
        holder = None
        if request.bind_to_caller:
            peer = http.scope[PEER_KEY]
            holder = holder_of(peer.pid)
            if holder is None:
                raise ControlError(400, "BadTokenRequest", "the calling process has already ended")
        try:
            token, record = tokens.create(request.name, profiles, request.ttl_seconds, holder)
        except ValueError as exc:
            raise ControlError(400, "BadTokenRequest", str(exc)) from None
        if request.reuse is not None:
            leases.remember(request.reuse, profiles, request.ttl_seconds, token, record)
        return {**_token_answer(token, record), "reused": False}

    @app.post("/v1/probes", dependencies=control)
    async def create_probe() -> dict[str, Any]:
        """A challenge to send to an address (the ECS port): only this daemon answers it."""
        probe, answer = probes.create()
        return {"probe": probe, "answer": answer}

    @app.get("/v1/tokens", dependencies=control)
    async def list_tokens() -> dict[str, Any]:
        return {"tokens": [{"name": r.name, "profiles": list(r.profiles), "created_at": r.created_at,
                            "expires_at": r.expires_at, "last_used_at": tokens.last_used.get(r.name)}
                           for r in tokens.records()]}

    @app.delete("/v1/tokens/{name}", dependencies=control)
    async def revoke_token(name: str) -> dict[str, Any]:
        if not tokens.revoke(name):
            raise ControlError(400, "UnknownToken", f"no token named {name!r}; `rolebroker token list` shows them")
        return {"revoked": name}

    @app.post("/v1/console", dependencies=control)
    async def console(request: ConsoleRequest) -> dict[str, Any]:
        # The daemon signs in with the role's credentials itself: only the URL comes back.
        return await sign_in(sessions, request.profile, request.duration_seconds, request.signin_url)

    @app.post("/v1/reload", dependencies=control)
    async def reload_config() -> dict[str, Any]:
        return await reload()

    return app


def _token_answer(token: str, record: Any) -> dict[str, Any]:
    return {"token": token, "name": record.name, "profiles": list(record.profiles), "expires_at": record.expires_at}
