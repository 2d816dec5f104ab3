"""The ECS form of the credentials URL: /v1/credentials/PROFILE/TOKEN, for SDKs that read
AWS_CONTAINER_CREDENTIALS_RELATIVE_URI and send no header. The path is the capability: scoped
like any client token, revocable, and never logged."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from typing import Any

import pytest

from rolebroker.broker.guard import allowed_hosts
from tests.harness import Broker


def get(broker: Broker, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"http://127.0.0.1:{broker.port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_token_in_the_path_serves_its_profile_only(broker: Broker, caplog: pytest.LogCaptureFixture) -> None:
    broker.login("dev")
    broker.settle()
    dev, prod = broker.token("dev"), broker.token("prod")
    caplog.set_level(logging.DEBUG)

    status, body = get(broker, f"/v1/credentials/dev/{dev}")
    assert status == 200 and body["AccessKeyId"].startswith("ASIA"), body
    _, served = get(broker, f"/v1/credentials/dev/{dev}")
    assert served["AccessKeyId"] == broker.raw_get("dev", dev)[2]["AccessKeyId"]  # the same as the header form

    status, body = get(broker, f"/v1/credentials/dev/{prod}")
    assert (status, body["code"]) == (403, "ProfileNotAllowed") and "serves only prod" in body["message"]
    status, body = get(broker, "/v1/credentials/dev/rbt_" + "x" * 43)
    assert (status, body["code"]) == (401, "InvalidToken")
    status, body = get(broker, "/v1/credentials/dev/")
    assert (status, body["code"]) == (401, "MissingToken")
    # The path's token is the capability: a header does not stand in for a wrong one.
    status, body = get(broker, "/v1/credentials/dev/rbt_" + "y" * 43, {"Authorization": dev})
    assert status == 401

    # Revoked: the path stops working at once.
    name = next(row["name"] for row in broker.control().request("GET", "/v1/tokens")["tokens"]
                if row["profiles"] == ["dev"])
    broker.control().request("DELETE", f"/v1/tokens/{name}")
    status, body = get(broker, f"/v1/credentials/dev/{dev}")
    assert (status, body["code"]) == (401, "InvalidToken")

    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert dev not in logged and prod not in logged and "rbt_" not in logged


def test_link_local_listeners_accept_the_bare_address_sdks_send_after_a_port_80_redirect() -> None:
    hosts = allowed_hosts([("127.0.0.1", 9911), ("169.254.170.2", 9911)])
    assert b"169.254.170.2" in hosts and b"169.254.170.2:9911" in hosts
    assert b"127.0.0.1" not in hosts  # loopback keeps the port-exact rule
    assert b"evil.example" not in hosts and b"169.254.170.2:80" not in hosts


@pytest.mark.parametrize("path", ["/v1/credentials/dev/../../v1/status", "/v1/credentials/dev/rbt_a/b",
                                  "/v1/credentials/dev/rbt_a%2Fb", "/v1/credentials/dev/rbt_a.b"])
def test_anything_but_one_token_segment_after_the_profile_is_a_400(broker: Broker, path: str) -> None:
    broker.login("dev")
    status, body = get(broker, path, {"Authorization": broker.token("dev")})
    assert (status, body["code"]) == (400, "BadProfileName"), (path, body)
    # The user's own CLI on the control socket gets no further with it.
    status, _, raw = broker.control_call("GET", path.replace("%2F", "%2f"))
    assert status == 400, (path, raw)


def test_the_failure_hook_never_sees_the_path_token(broker: Broker) -> None:
    """What a 401 hands on (the failure throttle, which describes requests in its summary log)
    carries the path without its token: a revoked or mistyped token is still a secret."""
    from rolebroker.broker.endpoint import CredentialsEndpoint

    seen: list[dict[str, Any]] = []

    async def record(scope: dict[str, Any]) -> None:
        seen.append(scope)

    async def fallback(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("not a credentials request?")

    endpoint = CredentialsEndpoint(broker.daemon.sessions, broker.daemon.tokens, fallback, record)
    bad = "rbt_" + "z" * 43
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "GET", "path": f"/v1/credentials/dev/{bad}",
             "raw_path": f"/v1/credentials/dev/{bad}".encode(), "headers": [], "client": ("127.0.0.1", 1)}
    broker.call(endpoint(scope, receive, send))
    assert sent[0]["status"] == 401
    assert [s["path"] for s in seen] == ["/v1/credentials/dev/<token>"]
    assert bad not in repr(seen)
