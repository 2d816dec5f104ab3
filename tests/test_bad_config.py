"""Broken configuration, as the daemon meets it: each mistake gets a message naming the
file, the profile and the fix; the other profiles keep working; the daemon keeps serving."""

from __future__ import annotations

import json

import os
from pathlib import Path

import pytest

from tests.harness import ALICE_KEY, ALICE_SECRET, DEV_ROLE, MFA_SERIAL, Broker, start_broker

GOOD = f"""
[alice]
aws_access_key_id = {ALICE_KEY}
aws_secret_access_key = {ALICE_SECRET}

[dev]
role_arn = {DEV_ROLE}
source_profile = alice
mfa_serial = {MFA_SERIAL}
"""

BROKEN_PROFILES = {
    "missing source": ("[bad]\nrole_arn = {role}\nsource_profile = nobody\n", "add a [nobody] section"),
    "source cycle": ("[bad]\nrole_arn = {role}\nsource_profile = loop\n[loop]\nrole_arn = {role}\n"
                     "source_profile = bad\n", "source_profile cycle bad -> loop -> bad"),
    "bad role ARN": ("[bad]\nrole_arn = arn:aws:iam::dev:role\nsource_profile = alice\n",
                     "expected arn:aws:iam::123456789012:role/NAME"),
    "duration out of range": ("[bad]\nrole_arn = {role}\nsource_profile = alice\nduration_seconds = 99999\n",
                              "use 900 to 43200 seconds"),
    "unknown strategy": ("[bad]\nrole_arn = {role}\nsource_profile = alice\nrolebroker_strategy = fast\n",
                         "use one of session-token, direct"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_PROFILES))
def test_a_broken_profile_is_explained_and_the_others_keep_working(tmp_path: Path, case: str) -> None:
    text, fix = BROKEN_PROFILES[case]
    broker = start_broker(tmp_path, {"credentials": GOOD + "\n" + text.format(role=DEV_ROLE), "config": ""})
    try:
        status, _, raw = broker.control_call("GET", "/v1/credentials/bad")  # the CLI's own channel reads any profile
        body = json.loads(raw)
        assert (status, body["code"]) == (403, "ProfileConfigError")
        assert "'bad'" in body["message"] and broker.files.credentials_file in body["message"]
        assert fix in body["message"]
        broker.login("dev")
        assert broker.raw_get("dev", broker.token("dev"))[0] == 200
        row = next(r for r in broker.control().request("GET", "/v1/status")["profiles"] if r["profile"] == "bad")
        assert fix in row["config_error"]
    finally:
        broker.stop()


BROKEN_FILES = {
    "syntax error": (b"[dev\nrole_arn = x\n", "cannot parse"),
    "not UTF-8": (b"[dev]\nrole_arn = \xff\xfe\n", "not valid UTF-8"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_FILES))
def test_a_broken_file_keeps_the_last_good_config(broker: Broker, case: str) -> None:
    content, problem = BROKEN_FILES[case]
    broker.login("dev")
    before = broker.raw_get("dev", broker.token("dev"))[2]["AccessKeyId"]
    Path(broker.files.credentials_file).write_bytes(content)
    result = broker.control().request("POST", "/v1/reload")
    assert not result["ok"] and problem in result["error"] and broker.files.credentials_file in result["error"]
    status = broker.control().request("GET", "/v1/status")
    assert problem in status["config_error"]
    assert broker.raw_get("dev", broker.token("dev"))[2]["AccessKeyId"] == before  # still served


def test_an_unreadable_file_is_reported_and_the_daemon_stays_up(tmp_path: Path) -> None:
    broker = start_broker(tmp_path)
    try:
        os.unlink(broker.files.credentials_file)
        os.mkdir(broker.files.credentials_file)  # unreadable as a file, even for root
        assert not broker.control().request("POST", "/v1/reload")["ok"]
        status = broker.control().request("GET", "/v1/status")
        assert "is a directory, not a regular file" in status["config_error"]
        assert broker.control().request("GET", "/v1/health")["status"] == "ok"  # still up
    finally:
        broker.stop()
