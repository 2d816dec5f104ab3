"""mfa_process, the direct strategy, role chains, other sources and config reloads."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from typing import Any

from rolebroker.broker.sts_world import Role, totp
from tests.harness import (
    ALICE_KEY, ALICE_SECRET, CONFIG_LAYOUT, DEV_ROLE, MFA_SECRET, MFA_SERIAL, OPEN_ROLE, PROD_ROLE, Broker, alice,
    standard_roles, start_broker,
)

KEYS = f"aws_access_key_id = {ALICE_KEY}\naws_secret_access_key = {ALICE_SECRET}\n"
STRICT_ROLE = "arn:aws:iam::666666666666:role/strict"


class Authenticator:
    """Stands in for `ykman oath accounts code`: prints the device's current code, which
    the test keeps in step with the injected clock."""

    def __init__(self, tmp: Path, broker_clock_now: object) -> None:
        self.path = tmp / "current-code"
        self.now = broker_clock_now
        self.command = f"cat {self.path}"

    def update(self) -> None:
        # Whole or not at all: a renewal may run `cat` at any moment.
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(totp(MFA_SECRET, self.now()) + "\n")  # type: ignore[operator]
        os.replace(temporary, self.path)

    def advance(self, broker: Broker, seconds: float) -> None:
        """Move the daemon's clock and the device's code together, on the daemon's loop: its
        background refresh wakes on the clock and must never read the previous window's code."""
        async def step() -> None:
            broker.clock.advance(seconds)
            self.update()

        broker.call(step())


def status_of(broker: Broker, profile: str) -> dict[str, object]:
    rows = broker.control().request("GET", "/v1/status")["profiles"]
    return next(r for r in rows if r["profile"] == profile)


def test_with_mfa_process_72_hours_need_no_human(tmp_path: Path) -> None:
    code_file = tmp_path / "current-code"
    layout = {"credentials": CONFIG_LAYOUT["credentials"],
              "config": CONFIG_LAYOUT["config"].replace(
                  f"mfa_serial = {MFA_SERIAL}", f"mfa_serial = {MFA_SERIAL}\nmfa_process = cat {code_file}")}
    broker = start_broker(tmp_path, layout)
    authenticator = Authenticator(tmp_path, broker.clock.now)
    try:
        authenticator.update()
        first = broker.raw_get("dev", broker.token("dev"))  # no login: the daemon asks the authenticator
        assert first[0] in (200, 503)
        broker.settle()
        failures = []
        for _ in range(72 * 6):  # ten-minute steps
            authenticator.advance(broker, 600)
            broker.call(broker.daemon.sessions.refresh_due())
            for profile in ("dev", "prod"):
                status, _, body = broker.raw_get(profile, broker.token(profile))
                if status != 200:
                    failures.append((broker.clock.now(), profile, body))
        assert failures == []
        used = broker.sts.used_codes()
        assert len(used) == broker.sts.count("GetSessionToken", ok=True) >= 6  # a new session every <12 h
        assert broker.sts.count("GetSessionToken", ok=False) == 0
        assert "mfa_process" in " ".join(status_of(broker, "dev")["notes"])  # type: ignore[arg-type]
    finally:
        broker.stop()


def test_login_without_a_code_uses_mfa_process(tmp_path: Path) -> None:
    code_file = tmp_path / "current-code"
    layout = {"credentials": CONFIG_LAYOUT["credentials"],
              "config": CONFIG_LAYOUT["config"].replace(
                  f"mfa_serial = {MFA_SERIAL}", f"mfa_serial = {MFA_SERIAL}\nmfa_process = cat {code_file}")}
    broker = start_broker(tmp_path, layout)
    try:
        Authenticator(tmp_path, broker.clock.now).update()
        result = broker.control().request("POST", "/v1/login", {"profile": "dev"})
        assert result["mfa_required"] and "dev" in result["profiles"]
        assert broker.sts.used_codes() == [totp(MFA_SECRET, broker.clock.now())]
    finally:
        broker.stop()


def test_a_broken_mfa_process_is_reported_not_fatal(tmp_path: Path) -> None:
    layout = {"credentials": CONFIG_LAYOUT["credentials"],
              "config": CONFIG_LAYOUT["config"].replace(
                  f"mfa_serial = {MFA_SERIAL}", f"mfa_serial = {MFA_SERIAL}\nmfa_process = echo not-a-code")}
    broker = start_broker(tmp_path, layout)
    try:
        broker.raw_get("dev", broker.token("dev"))
        broker.settle()
        status, _, body = broker.raw_get("dev", broker.token("dev"))
        assert status == 403 and "six-digit code" in body["message"]
        assert broker.sts.count("GetSessionToken") == 0
    finally:
        broker.stop()


def test_a_failing_mfa_process_says_what_it_printed_without_codes(tmp_path: Path) -> None:
    helper = "echo 'ykman: no YubiKey found; last code 123456 rejected' >&2; echo 654321; exit 1"
    layout = {"credentials": CONFIG_LAYOUT["credentials"],
              "config": CONFIG_LAYOUT["config"].replace(
                  f"mfa_serial = {MFA_SERIAL}", f"mfa_serial = {MFA_SERIAL}\nmfa_process = {helper}")}
    broker = start_broker(tmp_path, layout)
    try:
        broker.raw_get("dev", broker.token("dev"))
        broker.settle()
        status, _, body = broker.raw_get("dev", broker.token("dev"))
        assert status == 403
        assert "exited with status 1 saying: ykman: no YubiKey found; last code ****** rejected" in body["message"]
        assert "123456" not in body["message"] and "654321" not in body["message"]
    finally:
        broker.stop()


DIRECT_LAYOUT = {
    "credentials": f"[alice]\n{KEYS}",
    "config": f"""
[profile alice]
region = us-east-1
mfa_serial = {MFA_SERIAL}

[profile strict]
role_arn = {STRICT_ROLE}
source_profile = alice
rolebroker_strategy = direct
duration_seconds = 14400

[profile dev]
role_arn = {DEV_ROLE}
source_profile = alice
""",
}


def direct_roles() -> list[Role]:
    return [*standard_roles(), Role(STRICT_ROLE, max_session_duration=14400, require_mfa=True)]


def test_direct_strategy_assumes_with_the_code_for_the_full_duration(tmp_path: Path) -> None:
    broker = start_broker(tmp_path, DIRECT_LAYOUT, roles=direct_roles())
    try:
        assert broker.raw_get("strict", broker.token("strict"))[2]["code"] == "LoginRequired"
        broker.login("strict")
        calls = [c for c in broker.sts.calls if c.action == "AssumeRole"]
        assert calls[0].params["DurationSeconds"] == "14400"  # no chaining cap
        assert calls[0].params["SerialNumber"] == MFA_SERIAL and calls[0].caller_access_key_id == ALICE_KEY
        assert broker.sts.count("GetSessionToken") == 0
        assert broker.caller_arn("strict").startswith("arn:aws:sts::666666666666:assumed-role/strict/")
        assert status_of(broker, "strict")["strategy"] == "direct"
        assert status_of(broker, "dev")["strategy"] == "session-token"
        # dev uses the session-token strategy: the direct login did not log it in.
        assert broker.raw_get("dev", broker.token("dev"))[2]["code"] == "LoginRequired"
        broker.advance(4 * 3600)  # without mfa_process, the role session is the end
        status, _, body = broker.raw_get("strict", broker.token("strict"))
        assert (status, body["code"]) == (403, "LoginRequired")
    finally:
        broker.stop()


def test_direct_strategy_with_mfa_process_never_reuses_a_code(tmp_path: Path) -> None:
    code_file = tmp_path / "current-code"
    layout = {"credentials": DIRECT_LAYOUT["credentials"],
              "config": DIRECT_LAYOUT["config"].replace(
                  "rolebroker_strategy = direct", f"rolebroker_strategy = direct\nmfa_process = cat {code_file}")
              + f"\n[profile strict2]\nrole_arn = {STRICT_ROLE}\nsource_profile = alice\n"
                f"rolebroker_strategy = direct\nmfa_process = cat {code_file}\n"}
    broker = start_broker(tmp_path, layout, roles=direct_roles())
    authenticator = Authenticator(tmp_path, broker.clock.now)
    try:
        authenticator.update()
        # Two profiles on one device want a code in the same 30 s window: one must wait.
        broker.raw_get("strict", broker.token("strict"))
        broker.raw_get("strict2", broker.token("strict2"))
        broker.settle()
        served = [broker.raw_get(p, broker.token(p))[0] for p in ("strict", "strict2")]
        assert sorted(served) == [200, 503]
        authenticator.advance(broker, 30)
        broker.advance(0)
        for profile in ("strict", "strict2"):
            assert broker.get_settled(profile)[0] == 200
        used = broker.sts.used_codes()
        assert len(used) == len(set(used)) == 2
        assert broker.sts.count("AssumeRole", ok=False) == 0  # STS never saw a reused code
    finally:
        broker.stop()


def test_role_chain_is_capped_and_explains_lost_mfa(tmp_path: Path) -> None:
    layout = {"credentials": CONFIG_LAYOUT["credentials"],
              "config": CONFIG_LAYOUT["config"] + f"""
[profile hop]
role_arn = {OPEN_ROLE}
source_profile = dev
duration_seconds = 7200

[profile strict-hop]
role_arn = {PROD_ROLE}
source_profile = dev
"""}
    broker = start_broker(tmp_path, layout)
    try:
        broker.login("hop")
        assert broker.caller_arn("hop").startswith("arn:aws:sts::444444444444:assumed-role/open/")
        hop_call = next(c for c in broker.sts.calls if c.params.get("RoleArn") == OPEN_ROLE)
        assert hop_call.params["DurationSeconds"] == "3600"
        assert status_of(broker, "hop")["strategy"] == "chain via dev"
        status, _, body = broker.raw_get("strict-hop", broker.token("strict-hop"))
        assert status == 403 and "MFA does not carry over" in body["message"]
        assert broker.raw_get("hop", broker.token("hop"))[0] == 200  # the others are unaffected
    finally:
        broker.stop()


def test_credential_process_source_needs_no_login(tmp_path: Path) -> None:
    helper = tmp_path / "keys.py"
    helper.write_text("import json\nprint(json.dumps({'Version': 1, 'AccessKeyId': %r, 'SecretAccessKey': %r}))\n"
                      % (ALICE_KEY, ALICE_SECRET))
    layout = {"credentials": "", "config": f"""
[profile vault]
credential_process = {sys.executable} {helper}

[profile open]
role_arn = {OPEN_ROLE}
source_profile = vault
region = us-east-1
"""}
    broker = start_broker(tmp_path, layout, users=[alice(with_mfa=False)])
    try:
        assert broker.caller_arn("open").startswith("arn:aws:sts::444444444444:assumed-role/open/")
        assert status_of(broker, "open")["strategy"] == "from vault"
    finally:
        broker.stop()


def test_credential_source_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ALICE_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ALICE_SECRET)
    layout = {"credentials": "", "config": f"[profile open]\nrole_arn = {OPEN_ROLE}\ncredential_source = Environment\n"
                                         "region = us-east-1\n"}
    broker = start_broker(tmp_path, layout, users=[alice(with_mfa=False)])
    try:
        assert broker.get_settled("open")[0] == 200
        assert next(c for c in broker.sts.calls if c.action == "AssumeRole").caller_access_key_id == ALICE_KEY
    finally:
        broker.stop()


def test_reload_keeps_unchanged_sessions_and_survives_a_broken_file(broker: Broker) -> None:
    broker.login("dev")
    dev_before = broker.raw_get("dev", broker.token("dev"))[2]["AccessKeyId"]
    prod_before = broker.raw_get("prod", broker.token("prod"))[2]["AccessKeyId"]
    credentials = Path(broker.files.credentials_file)
    text = credentials.read_text()
    credentials.write_text(text.replace("duration_seconds = 7200", "duration_seconds = 1800")
                           + f"\n[extra]\nrole_arn = {OPEN_ROLE}\nsource_profile = default\n")
    result = broker.control().request("POST", "/v1/reload")
    assert result["ok"] and result["changed"] == ["extra", "prod"]
    assert broker.raw_get("dev", broker.token("dev"))[2]["AccessKeyId"] == dev_before  # untouched
    assert broker.get_settled("prod")[2]["AccessKeyId"] != prod_before  # re-made (an SDK retries a 503)
    assert broker.sts.count("GetSessionToken") == 1  # the MFA session survived
    # A broken file: the last good config stays, and the error is reported.
    credentials.write_text("[dev\nrole_arn = nonsense\n")
    result = broker.control().request("POST", "/v1/reload")
    assert not result["ok"] and broker.files.credentials_file in result["error"]
    assert broker.raw_get("dev", broker.token("dev"))[0] == 200
    assert broker.control().request("GET", "/v1/status")["config_error"]


def test_an_edited_file_is_picked_up_and_a_half_saved_one_loses_no_session(broker: Broker) -> None:
    def reload_if_changed() -> Any:  # what the daemon's file watcher does, on the daemon's loop
        return broker.call(broker.daemon.reload_if_changed())

    broker.login("dev")
    assert reload_if_changed() is None  # nothing changed on disk
    credentials = Path(broker.files.credentials_file)
    good = credentials.read_text()
    # An editor saves the file half-typed: dev's mfa_serial is gone for a moment.
    credentials.write_text(good.replace(f"mfa_serial = {MFA_SERIAL}", "mfa_serial = arn:aws:iam::1"))
    os.utime(credentials, (1, 1))
    assert reload_if_changed()["ok"]
    credentials.write_text(good)  # and then completely
    os.utime(credentials, (2, 2))
    assert reload_if_changed()["ok"]
    assert broker.get_settled("dev")[0] == 200  # no second MFA code was needed
    assert broker.sts.count("GetSessionToken") == 1


def test_a_bad_value_on_a_source_keeps_the_last_good_plan_of_its_profiles(broker: Broker) -> None:
    broker.login("dev")
    before = broker.get_settled("dev")[2]["AccessKeyId"]
    credentials = Path(broker.files.credentials_file)
    good = credentials.read_text()
    # A typo on the source profile: every profile built on it would be dropped at once.
    credentials.write_text(good.replace("[default]\n", "[default]\nrolebroker_mfa_session_seconds = abc\n", 1))
    result = broker.control().request("POST", "/v1/reload")
    assert result["ok"] and result["changed"] == []  # nothing re-made, nothing lost
    assert broker.raw_get("dev", broker.token("dev"))[2]["AccessKeyId"] == before
    assert broker.get_settled("prod")[0] == 200
    dev = status_of(broker, "dev")
    assert dev["config_error"] and "rolebroker_mfa_session_seconds" in dev["config_error"]
    assert "served with its last good settings" in " ".join(dev["notes"])  # type: ignore[arg-type]
    assert broker.sts.count("GetSessionToken") == 1  # no second code
    credentials.write_text(good)  # fixed
    assert broker.control().request("POST", "/v1/reload")["ok"]
    assert status_of(broker, "dev")["config_error"] is None
