"""The credentials endpoint as every SDK sees it (docs/SDK-COMPATIBILITY.md), over real sockets."""

from __future__ import annotations

import datetime as dt
import re

import botocore.exceptions
import pytest

from tests.harness import DEV_ROLE, Broker

Z_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def test_botocore_container_provider_gets_role_credentials(broker: Broker) -> None:
    broker.login("dev")
    credentials = broker.provider("dev").load()
    frozen = credentials.get_frozen_credentials()
    assert frozen.access_key.startswith("ASIA")
    assert frozen.token
    assert credentials.method == "container-role"


def test_response_meets_every_sdk_must(broker: Broker) -> None:
    broker.login("dev")
    status, headers, body = broker.raw_get("dev", broker.token("dev"))
    assert status == 200
    assert headers["content-type"] == "application/json"
    for field in ("AccessKeyId", "SecretAccessKey", "Token", "Expiration"):
        assert isinstance(body[field], str) and body[field]
    assert Z_TIMESTAMP.match(body["Expiration"])
    expires = dt.datetime.strptime(body["Expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    assert expires.timestamp() - broker.clock.now() > 15 * 60
    assert body["AccountId"] == "222222222222"
    assert body["RoleArn"] == DEV_ROLE


def test_missing_token_is_401_json(broker: Broker) -> None:
    status, headers, body = broker.raw_get("dev")
    assert status == 401
    assert headers["content-type"] == "application/json"
    assert body["code"] == "MissingToken" and "AWS_CONTAINER_AUTHORIZATION_TOKEN" in body["message"]


@pytest.mark.parametrize("transform", [lambda t: t + "x", lambda t: "Bearer " + t, lambda t: t[:-1],
                                       lambda t: t.upper(), lambda t: "x" + t[1:]])
def test_wrong_token_is_401_and_compared_byte_exact(broker: Broker, transform: object) -> None:
    broker.login("dev")
    token = broker.token("dev")
    status, _, body = broker.raw_get("dev", transform(token))  # type: ignore[operator]
    assert status == 401
    assert body["code"] == "InvalidToken"
    assert token not in body["message"]


def test_not_logged_in_is_4xx_with_the_command_to_run(broker: Broker) -> None:
    status, _, body = broker.raw_get("dev", broker.token("dev"))
    assert status == 403
    assert body["code"] == "LoginRequired"
    assert "rolebroker login dev" in body["message"]
    assert body["Message"] == body["message"]  # the JS SDK reads the capitalised pair


def test_botocore_shows_the_login_hint_to_the_user(broker: Broker) -> None:
    with pytest.raises(botocore.exceptions.CredentialRetrievalError) as raised:
        broker.provider("dev").load()
    assert "rolebroker login dev" in str(raised.value)


def test_unknown_profile_is_4xx_not_404(broker: Broker) -> None:
    token = broker.control().request("POST", "/v1/tokens", {"all_profiles": True})["token"]
    status, _, body = broker.raw_get("nosuch", token)
    assert status == 403
    assert body["code"] == "UnknownProfile"
    assert "rolebroker status" in body["message"]


def test_sts_down_with_nothing_cached_is_503_then_recovers(broker: Broker) -> None:
    broker.sts.inject_fault("AssumeRole", "unavailable", times=20)
    result = broker.login("dev")
    assert "STS is having trouble" in result["warm_error"]
    status, _, body = broker.raw_get("prod", broker.token("prod"))
    assert (status, body["code"]) == (503, "StsUnavailable")
    broker.sts.clear_faults()
    broker.advance(301)  # past the longest backoff
    assert broker.raw_get("prod", broker.token("prod"))[0] == 200


def test_token_for_one_profile_is_refused_for_another(broker: Broker) -> None:
    broker.login("dev")
    status, _, body = broker.raw_get("prod", broker.token("dev"))
    assert status == 403
    assert body["code"] == "ProfileNotAllowed"


def test_cached_credentials_never_wait_for_sts(broker: Broker) -> None:
    broker.login("dev")
    broker.sts.inject_fault(None, "timeout", times=100)  # STS hangs from now on
    try:
        for _ in range(3):
            assert broker.raw_get("dev", broker.token("dev"))[0] == 200
    finally:
        broker.sts.release_hung()
