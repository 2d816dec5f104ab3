"""One MFA code serves every profile that shares the source and the device."""

from __future__ import annotations

from pathlib import Path

import pytest

from rolebroker.broker.sts_world import IamUser, MfaDevice
from rolebroker.clients.daemon_client import DaemonError
from tests.harness import (
    ALICE_KEY, ALICE_SECRET, CONFIG_LAYOUT, CREDENTIALS_LAYOUT, DEV_ROLE, MFA_SECRET, MFA_SERIAL, OPEN_ROLE,
    PROD_ROLE, Broker, alice, start_broker,
)


@pytest.mark.parametrize("layout", [CREDENTIALS_LAYOUT, CONFIG_LAYOUT], ids=["credentials-file", "config-file"])
def test_one_code_serves_dev_and_prod_in_both_layouts(tmp_path: Path, layout: dict[str, str]) -> None:
    broker = start_broker(tmp_path, layout)
    try:
        result = broker.login("dev")
        assert {"dev", "prod"} <= set(result["profiles"])
        assert broker.caller_arn("dev").startswith("arn:aws:sts::222222222222:assumed-role/dev/")
        assert broker.caller_arn("prod").startswith("arn:aws:sts::333333333333:assumed-role/prod/")
        assert broker.sts.count("GetSessionToken") == 1
        assert len(broker.sts.used_codes()) == 1
    finally:
        broker.stop()


def test_role_is_assumed_from_the_session_without_mfa_parameters(broker: Broker) -> None:
    broker.login("dev")
    broker.settle()
    assume_calls = [c for c in broker.sts.calls if c.action == "AssumeRole" and c.status == 200]
    assert {c.params["RoleArn"] for c in assume_calls} == {DEV_ROLE, PROD_ROLE}
    for call in assume_calls:
        assert "SerialNumber" not in call.params and "TokenCode" not in call.params
        assert call.caller_access_key_id.startswith("ASIA")  # the MFA session's key, not Alice's


def test_chaining_cap_applies_and_status_says_so(broker: Broker) -> None:
    broker.login("prod")
    broker.settle()
    asked = [c.params["DurationSeconds"] for c in broker.sts.calls
             if c.action == "AssumeRole" and c.params["RoleArn"] == PROD_ROLE]
    assert asked == ["3600"]
    prod = next(r for r in broker.control().request("GET", "/v1/status")["profiles"] if r["profile"] == "prod")
    assert prod["duration"] == 3600 and prod["requested_duration"] == 7200
    assert any("capped" in note for note in prod["notes"])


def test_wrong_code_fails_in_plain_words_and_keeps_existing_sessions(broker: Broker) -> None:
    broker.login("dev")
    before = broker.raw_get("prod", broker.token("prod"))
    wrong = "000000" if broker.next_code() != "000000" else "111111"
    with pytest.raises(DaemonError) as raised:
        broker.login("dev", wrong)
    assert raised.value.code == "MfaCodeRejected"
    assert "invalid MFA one time pass code" in raised.value.message
    assert "rolebroker login dev" in raised.value.message
    after = broker.raw_get("prod", broker.token("prod"))
    assert before[0] == after[0] == 200
    assert before[2]["AccessKeyId"] == after[2]["AccessKeyId"]


def test_reused_code_is_refused(broker: Broker) -> None:
    code = broker.next_code()
    broker.login("dev", code)
    with pytest.raises(DaemonError) as raised:
        broker.login("dev", code)
    assert raised.value.code == "MfaCodeRejected"
    assert "Each code works once" in raised.value.message
    assert broker.sts.count("GetSessionToken", ok=True) == 1


def test_profile_without_mfa_needs_no_login(tmp_path: Path) -> None:
    layout = {"credentials": CONFIG_LAYOUT["credentials"],
              "config": f"[profile alice]\nregion = us-east-1\n\n[profile open]\nrole_arn = {OPEN_ROLE}\n"
                        "source_profile = alice\nduration_seconds = 14400\n"}
    broker = start_broker(tmp_path, layout, users=[alice(with_mfa=False)])
    try:
        assert broker.login("open", "")["mfa_required"] is False
        assert broker.caller_arn("open").startswith("arn:aws:sts::444444444444:assumed-role/open/")
        assume = [c for c in broker.sts.calls if c.action == "AssumeRole"]
        # From long-term keys there is no chaining cap: the role's own maximum applies.
        assert assume[0].params["DurationSeconds"] == "14400"
        assert assume[0].caller_access_key_id == ALICE_KEY
        assert broker.sts.count("GetSessionToken") == 0
    finally:
        broker.stop()


def test_mfa_protected_user_without_role_is_served_the_session(tmp_path: Path) -> None:
    layout = {"credentials": f"[alice]\naws_access_key_id = {ALICE_KEY}\naws_secret_access_key = {ALICE_SECRET}\n"
                             f"mfa_serial = {MFA_SERIAL}\nrolebroker_mfa_session_seconds = 129600\n",
              "config": "[profile alice]\nregion = us-east-1\n"}
    broker = start_broker(tmp_path, layout)
    try:
        status, _, _ = broker.raw_get("alice", broker.token("alice"))
        assert status == 403
        broker.login("alice")
        assert broker.caller_arn("alice") == "arn:aws:iam::111111111111:user/alice"
        session_calls = [c for c in broker.sts.calls if c.action == "GetSessionToken"]
        assert session_calls[0].params["DurationSeconds"] == "129600"  # the 36 h maximum
    finally:
        broker.stop()


def test_login_with_mfa_required_and_no_code_says_so(broker: Broker) -> None:
    with pytest.raises(DaemonError) as raised:
        broker.control().request("POST", "/v1/login", {"profile": "dev"})
    assert raised.value.code == "LoginRequired" and "rolebroker login dev" in raised.value.message


def test_logout_wipes_the_shared_session(broker: Broker) -> None:
    broker.login("dev")
    wiped = broker.control().request("POST", "/v1/logout", {"profile": "prod"})["wiped"]
    assert wiped == ["dev", "prod"]
    for profile in ("dev", "prod"):
        status, _, body = broker.raw_get(profile, broker.token(profile))
        assert (status, body["code"]) == (403, "LoginRequired")


def test_two_users_two_sessions(tmp_path: Path) -> None:
    bob_serial = "arn:aws:iam::111111111111:mfa/bob"
    bob = IamUser("AKIABOB0000000000001", "bob-secret-0000000000000000000000000000",
                  "arn:aws:iam::111111111111:user/bob", MfaDevice(bob_serial, b"bob-seed"))
    layout = {"credentials": CREDENTIALS_LAYOUT["credentials"] + f"""
[bob]
aws_access_key_id = AKIABOB0000000000001
aws_secret_access_key = bob-secret-0000000000000000000000000000

[bob-dev]
role_arn = {DEV_ROLE}
source_profile = bob
mfa_serial = {bob_serial}
""", "config": CREDENTIALS_LAYOUT["config"]}
    broker = start_broker(tmp_path, layout, users=[alice(), bob])
    try:
        broker.login("dev")
        status, _, body = broker.raw_get("bob-dev", broker.token("bob-dev"))
        assert (status, body["code"]) == (403, "LoginRequired")
        assert MFA_SECRET  # alice's code never opened bob's session
    finally:
        broker.stop()
