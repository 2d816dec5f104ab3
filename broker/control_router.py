"""A small ASGI router for the control API: a route table, JSON in and out, one error shape,
and the OpenAPI document written from the same table.

Every answer, including an unknown path, a wrong method and a body that is not JSON, has
the daemon's error shape {code, message, Code, Message}: the CLI and the fuzz test see one
format, never a framework's own.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .endpoint import Receive, Scope, Send
from .request_fields import Body, Field, Invalid
from .wire import error_body, response_messages

log = logging.getLogger("rolebroker.control")


class ControlError(Exception):
    """An answer other than 200, with the code and the message the user sees."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Call:
    """What a handler is given: the request's scope and its checked inputs."""

    scope: Scope
    path: Mapping[str, str]
    query: Mapping[str, Any]
    body: Mapping[str, Any]


Handler = Callable[[Call], Awaitable[dict[str, Any]]]
# Turns an exception a handler may raise into (status, code, message); None: not ours.
ErrorMapper = Callable[[Exception], "tuple[int, str, str] | None"]


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # "/v1/tokens/{name}": a {name} is one path segment
    handler: Handler
    summary: str
    body: Body | None = None
    query: Mapping[str, Field] = field(default_factory=dict)
    segments: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "segments", tuple(self.path.strip("/").split("/")))

    def match(self, segments: Sequence[str]) -> dict[str, str] | None:
        if len(segments) != len(self.segments):
            return None
        params: dict[str, str] = {}
        for pattern, value in zip(self.segments, segments):
            if pattern.startswith("{"):
                if not value:
                    return None
                params[pattern[1:-1]] = value
            elif pattern != value:
                return None
        return params


HELP = "see `rolebroker --help` for what the CLI can do"


class ControlRouter:
    def __init__(self, routes: Sequence[Route], errors: ErrorMapper, title: str, version: str,
                 error_statuses: Mapping[int, str]) -> None:
        self.routes = list(routes)
        self.errors = errors
        self.title, self.version = title, version
        self.error_statuses = error_statuses  # documented for every route: status -> when
        self._openapi: dict[str, Any] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            status, answer = 200, await self._dispatch(scope, receive)
            body = json.dumps(answer).encode()
        except ControlError as exc:
            status, body = exc.status, error_body(exc.code, exc.message)
        except Exception as exc:
            mapped = self.errors(exc)
            if mapped is None:
                # A bug: where it happened goes to the log, and the CLI gets the daemon's error shape
                # rather than uvicorn's plain-text 500. Not the exception's message: raised deep
                # inside a login, it could quote the MFA code it was given.
                log.error("control API: %s %r failed with %s at:\n%s", scope["method"], scope["path"][:200],
                          type(exc).__name__, "".join(traceback.format_tb(exc.__traceback__)).rstrip())
                mapped = (500, "InternalError", "the daemon failed on this request; its log says why")
            status, body = mapped[0], error_body(mapped[1], mapped[2])
        start, content = response_messages(status, body)
        if scope["method"] == "HEAD":  # the headers a GET would get, and no body
            content = {**content, "body": b""}
        await send(start)
        await send(content)

    async def _dispatch(self, scope: Scope, receive: Receive) -> dict[str, Any]:
        segments = scope["path"].strip("/").split("/")
        method = "GET" if scope["method"] == "HEAD" else scope["method"]
        matched = [(route, params) for route in self.routes if (params := route.match(segments)) is not None]
        if not matched:
            raise ControlError(404, "NotFound", f"no such path: {HELP}")
        for route, params in matched:
            if route.method == method:
                query = _parse_query(route, scope)
                body = _parse_body(route, scope, await _read_all(receive)) if route.body else {}
                return await route.handler(Call(scope, params, query, body))
        allowed = ", ".join(sorted({route.method for route, _ in matched}))
        raise ControlError(405, "MethodNotAllowed", f"this path takes {allowed}: {HELP}")

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI 3.1 document of the routes, built once."""
        if self._openapi is None:
            self._openapi = _document(self)
        return self._openapi


# What a user typed wrong most often, said with the field's name.
HINTS = {"body.code": "an MFA code is six digits", "body.name": "a token name is 1-64 letters, digits and _.@:-"}


def _bad_fields(names: Sequence[str]) -> ControlError:
    hints = [HINTS[name] for name in names if name in HINTS]
    hint = f" ({'; '.join(hints)})" if hints else ""
    return ControlError(400, "BadRequest", f"invalid request fields: {', '.join(names)}{hint}")


def _parse_query(route: Route, scope: Scope) -> dict[str, Any]:
    from urllib.parse import parse_qsl

    given: dict[str, str] = {}
    raw = scope.get("query_string", b"").decode("latin-1")
    for name, value in parse_qsl(raw, keep_blank_values=True):
        given.setdefault(name, value)  # the first of a repeated parameter, as Starlette did
    parsed: dict[str, Any] = {}
    bad: list[str] = []
    for name, spec in route.query.items():
        if name not in given:
            parsed[name] = spec.default
            continue
        try:
            parsed[name] = spec.kind.check(given[name])
        except Invalid:
            bad.append(f"query.{name}")
    if bad:
        raise _bad_fields(bad)
    return parsed


def _parse_body(route: Route, scope: Scope, raw: bytes) -> dict[str, Any]:
    assert route.body is not None
    content_type = dict(scope["headers"]).get(b"content-type", b"").split(b";")[0].strip().lower()
    if content_type and content_type != b"application/json" and not content_type.endswith(b"+json"):
        raise ControlError(400, "BadRequest", "the body must be JSON (Content-Type: application/json)")
    try:
        value = json.loads(raw) if raw else None
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested deeper than Python recurses
        raise _bad_fields(["body"]) from None
    parsed, bad = route.body.parse(value)
    if bad:
        raise _bad_fields(bad)
    return parsed


async def _read_all(receive: Receive) -> bytes:
    # The guard has read and bounded the body already (guard.MAX_BODY) and replays it here.
    chunks: list[bytes] = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _document(router: ControlRouter) -> dict[str, Any]:
    error_ref = {"$ref": "#/components/schemas/ApiError"}
    errors = {str(status): {"description": when, "content": {"application/json": {"schema": error_ref}}}
              for status, when in router.error_statuses.items()}
    schemas: dict[str, Any] = {"ApiError": {
        "type": "object", "title": "ApiError",
        "description": "Every error: a stable code and a message that says what to do (twice, for the JS SDK).",
        "properties": {name: {"type": "string"} for name in ("code", "message", "Code", "Message")},
        "required": ["code", "message", "Code", "Message"],
    }}
    paths: dict[str, dict[str, Any]] = {}
    for route in router.routes:
        operation: dict[str, Any] = {
            "summary": route.summary,
            "operationId": route.method.lower() + "_" + "_".join(
                segment.strip("{}").replace(".", "_") for segment in route.segments),
            "responses": {"200": {"description": "done", "content": {"application/json": {"schema": {
                "type": "object", "additionalProperties": True}}}}, **errors},
        }
        parameters = [{"name": name[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
                      for name in route.segments if name.startswith("{")]
        parameters += [{"name": name, "in": "query", "required": spec.required, "schema": spec.schema()}
                       for name, spec in route.query.items()]
        if parameters:
            operation["parameters"] = parameters
        if route.body is not None:
            schemas[route.body.name] = route.body.schema()
            operation["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{route.body.name}"}}}}
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {"openapi": "3.1.0", "info": {"title": router.title, "version": router.version},
            "paths": paths, "components": {"schemas": schemas}}
