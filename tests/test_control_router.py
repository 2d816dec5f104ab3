"""The control API's own request checks, over the real control socket of a running daemon.

JSON types are taken strictly (no "true" for true, no 7 for a name), only field names are
reported (a refused value may be a code or a token), members the daemon does not know are
ignored, and each refusal leaves the daemon's state as it was.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from rolebroker.broker.control_router import Call, ControlRouter, Route
from rolebroker.broker.request_fields import Body, Field, Text
from tests.harness import Broker


def refused(broker: Broker, method: str, path: str, body: Any) -> str:
    status, headers, raw = broker.control_call(method, path, body)
    assert status == 400, raw
    answer = json.loads(raw)
    assert answer["code"] == "BadRequest" == answer["Code"]
    return str(answer["message"])


@pytest.mark.parametrize(("body", "fields"), [
    ({"profile": 7}, "body.profile"),
    ({"profile": "dev", "code": 123456}, "body.code"),
    ({"profile": "dev", "code": "12345"}, "body.code"),
    ({"profile": "dev", "code": "123456\n"}, "body.code"),  # $ must mean the end of the text
    ({"profile": "dev\n"}, "body.profile"),
    ({"code": "123456"}, "body.profile"),  # required
    (["dev"], "body"),
    ("dev", "body"),
])
def test_login_fields_are_checked_and_named_without_their_values(broker: Broker, body: Any, fields: str) -> None:
    message = refused(broker, "POST", "/v1/login", body)
    assert message.startswith(f"invalid request fields: {fields}")
    for value in ("123456", "12345", "7"):
        assert value not in message
    assert broker.daemon.sessions.status()[0].credentials_expire_at is None  # nothing was logged in


@pytest.mark.parametrize(("body", "fields"), [
    ({"profiles": ["dev"], "all_profiles": "true"}, "body.all_profiles"),
    ({"profiles": ["dev"], "bind_to_caller": 1}, "body.bind_to_caller"),
    ({"profiles": ["dev"], "ttl_seconds": True}, "body.ttl_seconds"),
    ({"profiles": ["dev"], "ttl_seconds": 0}, "body.ttl_seconds"),
    ({"profiles": ["dev"], "ttl_seconds": "60"}, "body.ttl_seconds"),
    ({"profiles": ["dev"], "ttl_seconds": 366 * 86400 + 1}, "body.ttl_seconds"),
    ({"profiles": [7]}, "body.profiles"),
    ({"profiles": ["dev"] * 65}, "body.profiles"),
    ({"profiles": ["dev"], "name": "n" * 65}, "body.name"),
    ({"profiles": ["dev"], "reuse": "Env"}, "body.reuse"),
    ({"profiles": "dev", "all_profiles": 0}, "body.profiles, body.all_profiles"),
])
def test_token_fields_are_checked_and_no_token_is_made(broker: Broker, body: Any, fields: str) -> None:
    before = len(broker.daemon.tokens.records())
    assert refused(broker, "POST", "/v1/tokens", body).startswith(f"invalid request fields: {fields}")
    assert len(broker.daemon.tokens.records()) == before


def test_what_the_checks_accept(broker: Broker) -> None:
    status, _, raw = broker.control_call("POST", "/v1/tokens", {
        "profiles": ["dev"], "ttl_seconds": 90, "name": None, "reuse": None,
        "from_a_newer_cli": {"ignored": True}})  # unknown members are ignored
    assert status == 200, raw
    assert json.loads(raw)["expires_at"] is not None
    console = broker.control_call("POST", "/v1/console", {"profile": "dev", "duration_seconds": 900.5})
    assert console[0] == 400 and b"body.duration_seconds" in console[2]  # a whole number of seconds
    env = broker.control_call("GET", "/v1/profiles/dev/env?target=container", None)
    assert env[0] == 400 and b"query.target" in env[2]


def test_a_body_that_says_it_is_not_json_is_refused(broker: Broker) -> None:
    status, _, raw = broker.control_call("POST", "/v1/login", b'{"profile": "dev"}', {"Content-Type": "text/plain"})
    assert status == 400 and json.loads(raw)["code"] == "BadRequest"
    assert b"Content-Type: application/json" in raw


def test_the_document_describes_the_checks(broker: Broker) -> None:
    schema = broker.daemon.app.app.fallback.load().openapi()
    token = schema["components"]["schemas"]["TokenRequest"]["properties"]
    assert token["ttl_seconds"] == {"anyOf": [{"type": "number", "exclusiveMinimum": 0, "maximum": 366 * 86400},
                                              {"type": "null"}], "default": None}
    assert token["all_profiles"] == {"type": "boolean", "default": False}
    login = schema["components"]["schemas"]["LoginRequest"]
    assert login["required"] == ["profile"]
    target = schema["paths"]["/v1/profiles/{profile}/env"]["get"]["parameters"][1]
    assert target["in"] == "query" and target["schema"]["pattern"] == "^(host|docker)$"


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/tokens", b"[" * 20000 + b"]" * 20000),  # deeper than Python recurses, under the body limit
    ("/v1/tokens", b'{"profiles": ["dev"], "ttl_seconds": ' + b"9" * 400 + b"}"),  # no float holds it
    ("/v1/console", b'{"profile": "dev", "duration_seconds": 1' + b"0" * 400 + b"}"),
])
def test_bodies_that_break_a_parser_are_a_400_not_a_500(broker: Broker, path: str, body: bytes) -> None:
    status, headers, raw = broker.control_call("POST", path, body)
    assert status == 400, raw[:200]
    assert json.loads(raw)["code"] == "BadRequest"
    assert broker.control().request("GET", "/v1/health")["status"] == "ok"


@pytest.mark.parametrize("signin_url", ["http://[::1", "https://signin.aws.amazon.com:abc/federation",
                                        "https://signin.aws.amazon.com:99999/federation"])
def test_a_sign_in_url_that_is_not_a_url_is_refused_saying_why(broker: Broker, signin_url: str) -> None:
    broker.login("dev")
    status, _, raw = broker.control_call("POST", "/v1/console", {"profile": "dev", "signin_url": signin_url})
    assert status == 400, raw
    assert json.loads(raw)["code"] == "ConsoleSignInRefused"


def test_head_gets_the_headers_of_a_get_and_no_body(broker: Broker) -> None:
    get = broker.control_call("GET", "/v1/health")
    head = broker.control_call("HEAD", "/v1/health")
    assert head[0] == get[0] == 200 and head[2] == b""
    assert head[1]["content-length"] == get[1]["content-length"] == str(len(get[2]))


def test_only_json_media_types_are_read_as_json(broker: Broker) -> None:
    for media_type in ("application/notjson", "text/json-ish"):
        status, _, raw = broker.control_call("POST", "/v1/login", {"profile": "dev"}, {"Content-Type": media_type})
        assert status == 400 and b"Content-Type: application/json" in raw, media_type
    status, _, raw = broker.control_call("POST", "/v1/logout", {}, {"Content-Type": "application/vnd.x+json"})
    assert status == 200, raw


def test_a_bug_in_a_handler_is_a_json_500_and_its_message_stays_out_of_the_log(
        caplog: pytest.LogCaptureFixture) -> None:
    async def broken(call: Call) -> dict[str, Any]:
        raise RuntimeError(f"failed with code {call.body['code']}")  # a message quoting its input

    router = ControlRouter([Route("POST", "/v1/broken", broken, "a handler with a bug",
                                  body=Body("B", {"code": Field(Text(), required=True)}))],
                           lambda exc: None, "t", "0", {})
    sent: list[dict[str, Any]] = []

    async def scenario() -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b'{"code": "123456"}', "more_body": False}

        async def send(message: Any) -> None:
            sent.append(dict(message))

        await router({"type": "http", "method": "POST", "path": "/v1/broken", "query_string": b"",
                      "headers": [(b"content-type", b"application/json")]}, receive, send)

    asyncio.run(scenario())
    assert sent[0]["status"] == 500
    body = json.loads(sent[1]["body"])
    assert body["code"] == "InternalError" and "log" in body["message"]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "RuntimeError" in logged and "broken" in logged  # where it happened
    assert "123456" not in logged and "123456" not in json.dumps(body)
