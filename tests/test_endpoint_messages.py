"""What a refused client reads: every 401/403 says what happened and the next step, and
botocore shows it to the user as it is."""

from __future__ import annotations

import botocore.credentials
import pytest

from tests.harness import Broker


def test_a_token_for_another_profile_names_what_it_serves_and_how_to_get_one(broker: Broker) -> None:
    broker.login("dev")
    status, _, body = broker.raw_get("dev", broker.token("prod"))
    assert (status, body["code"]) == (403, "ProfileNotAllowed")
    message = body["message"]
    assert "serves only prod, not 'dev'" in message, message
    assert 'rolebroker env dev' in message and "token create --profile dev" in message, message
    # botocore puts the body in front of the user.
    provider = botocore.credentials.ContainerProvider(environ={
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": broker.url("dev"),
        "AWS_CONTAINER_AUTHORIZATION_TOKEN": broker.token("prod")})
    with pytest.raises(botocore.exceptions.CredentialRetrievalError) as raised:
        provider.load().get_frozen_credentials()
    assert "serves only prod, not 'dev'" in str(raised.value)


@pytest.mark.parametrize("token", [None, "rbt_" + "x" * 43])
def test_a_401_mentions_sdks_that_do_not_read_the_token_file(broker: Broker, token: str | None) -> None:
    status, _, body = broker.raw_get("dev", token)
    assert status == 401 and body["code"] == ("MissingToken" if token is None else "InvalidToken")
    message = body["message"]
    assert "rolebroker env dev" in message
    # The daemon cannot tell a token from a file: it names the SDKs that never read the file.
    assert "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE" in message and "Go" in message and "--token-file" in message
    assert token is None or token not in message
