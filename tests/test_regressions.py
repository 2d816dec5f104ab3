"""Behaviours a review found wrong once; each test failed before its fix."""

from __future__ import annotations

import sys
from pathlib import Path

from rolebroker.broker.sessions import Issued
from tests.harness import ALICE_KEY, ALICE_SECRET, CONFIG_LAYOUT, MFA_SERIAL, OPEN_ROLE, Broker, alice, start_broker
from tests.test_strategies import DIRECT_LAYOUT, STRICT_ROLE, direct_roles


def test_a_second_login_keeps_serving_the_credentials_already_issued(broker: Broker) -> None:
    broker.login("dev")
    before = broker.raw_get("dev", broker.token("dev"))
    broker.sts.inject_fault("AssumeRole", "throttling", times=100)  # the re-warm fails...
    broker.login("dev")
    after = broker.raw_get("dev", broker.token("dev"))
    assert after[0] == 200  # ...and clients never notice
    assert after[2]["AccessKeyId"] == before[2]["AccessKeyId"]


def test_issued_credentials_hide_their_secrets_in_repr(broker: Broker) -> None:
    broker.login("dev")
    body = broker.raw_get("dev", broker.token("dev"))[2]
    issued = broker.daemon.sessions.cached("dev")
    assert isinstance(issued, Issued)
    text = repr(issued)
    assert body["SecretAccessKey"] not in text and body["Token"] not in text


def test_logout_of_a_direct_profile_leaves_the_shared_session_alone(tmp_path: Path) -> None:
    broker = start_broker(tmp_path, DIRECT_LAYOUT, roles=direct_roles())
    try:
        broker.login("dev")
        broker.login("strict")
        wiped = broker.control().request("POST", "/v1/logout", {"profile": "strict"})["wiped"]
        assert wiped == ["strict"]
        assert broker.raw_get("strict", broker.token("strict"))[2]["code"] == "LoginRequired"
        assert broker.raw_get("dev", broker.token("dev"))[0] == 200
    finally:
        broker.stop()


def test_a_chain_on_a_direct_profile_logs_in_its_bottom(tmp_path: Path) -> None:
    layout = {"credentials": DIRECT_LAYOUT["credentials"],
              "config": DIRECT_LAYOUT["config"] + f"\n[profile above]\nrole_arn = {OPEN_ROLE}\nsource_profile = strict\n"
                                                  "region = us-east-1\n"}
    broker = start_broker(tmp_path, layout, roles=direct_roles())
    try:
        result = broker.login("above")
        assert result["warm_error"] is None and result["profiles"] == ["strict", "above"]
        assert broker.raw_get("above", broker.token("above"))[0] == 200
        first_hop = next(c for c in broker.sts.calls if c.action == "AssumeRole")
        assert first_hop.params["RoleArn"] == STRICT_ROLE and first_hop.params["SerialNumber"] == MFA_SERIAL
    finally:
        broker.stop()


def test_a_source_helper_printing_garbage_gets_a_json_error_not_a_500(tmp_path: Path) -> None:
    helper = tmp_path / "garbage.py"
    helper.write_text("print('this is not json')\n")
    layout = {"credentials": "", "config": f"[profile vault]\ncredential_process = {sys.executable} {helper}\n"
                                           f"[profile open]\nrole_arn = {OPEN_ROLE}\nsource_profile = vault\n"}
    broker = start_broker(tmp_path, layout, users=[alice(with_mfa=False)])
    try:
        status, headers, body = broker.get_settled("open")
        assert status in (403, 503) and headers["content-type"] == "application/json"
        assert body["code"] and "vault" in body["message"]
        assert broker.raw_get("open", broker.token("open"))[0] == status  # backed off, same answer
    finally:
        broker.stop()


def test_status_of_an_mfa_process_profile_before_first_use(tmp_path: Path) -> None:
    layout = {"credentials": CONFIG_LAYOUT["credentials"],
              "config": CONFIG_LAYOUT["config"].replace(f"mfa_serial = {MFA_SERIAL}",
                                                        f"mfa_serial = {MFA_SERIAL}\nmfa_process = echo 123456")}
    broker = start_broker(tmp_path, layout)
    try:
        from rolebroker.clients.status_view import render_status

        table = render_status(broker.control().request("GET", "/v1/status"))
        assert "starts on first use (mfa_process)" in table
    finally:
        broker.stop()


def test_a_malformed_code_is_a_clear_4xx(broker: Broker) -> None:
    from rolebroker.clients.daemon_client import DaemonError

    try:
        broker.control().request("POST", "/v1/login", {"profile": "dev", "code": "12345"})
    except DaemonError as exc:
        assert exc.status == 400 and "six digits" in exc.message
    else:
        raise AssertionError("a five-digit code was accepted")
    assert broker.sts.count("GetSessionToken") == 0


def test_keys_never_reach_a_status_or_env_answer(broker: Broker) -> None:
    broker.login("dev")
    answers = [broker.control().request("GET", "/v1/status"),
               broker.control().request("GET", "/v1/profiles/dev/env")]
    text = repr(answers)
    assert ALICE_KEY not in text and ALICE_SECRET not in text
    assert broker.raw_get("dev", broker.token("dev"))[2]["SecretAccessKey"] not in text


def test_a_logout_during_a_slow_login_wins(broker: Broker) -> None:
    import threading

    from rolebroker.clients.daemon_client import DaemonError

    broker.sts.inject_fault("GetSessionToken", "slow")
    outcome: list[object] = []
    code = broker.next_code()

    def login() -> None:
        try:
            outcome.append(broker.login("dev", code))
        except DaemonError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=login)
    thread.start()
    assert broker.sts.wait_held()  # STS is answering the login...
    broker.control().request("POST", "/v1/logout", {"profile": None})  # ...when the user logs out
    broker.sts.release_hung()
    thread.join(30)
    assert isinstance(outcome[0], DaemonError) and outcome[0].code == "LoginRequired"
    assert broker.raw_get("dev", broker.token("dev"))[2]["code"] == "LoginRequired"


def test_profile_names_with_characters_token_names_lack_still_get_tokens(tmp_path: Path) -> None:
    layout = {"credentials": CONFIG_LAYOUT["credentials"],
              "config": CONFIG_LAYOUT["config"] + f"\n[profile dev+ops]\nrole_arn = {OPEN_ROLE}\n"
                                                  "source_profile = alice\n"}
    broker = start_broker(tmp_path, layout)
    try:
        minted = broker.control().request("POST", "/v1/tokens", {"profiles": ["dev+ops"]})  # as `exec` asks
        assert minted["profiles"] == ["dev+ops"] and "+" not in minted["name"]
        broker.login("dev+ops")
        assert broker.raw_get("dev+ops", minted["token"])[0] == 200
    finally:
        broker.stop()


def test_docker_env_files_of_dead_tokens_are_cleared(broker: Broker) -> None:
    broker.login("dev")  # env needs a session: without a terminal it would not ask
    import os
    import shlex
    import subprocess

    rolebroker = Path(sys.executable).parent / "rolebroker"
    env = {**os.environ, "ROLEBROKER_RUNTIME_DIR": str(broker.daemon.settings.runtime_dir)}

    def docker_env_file() -> Path:
        printed = subprocess.run([str(rolebroker), "env", "dev", "--format", "docker"], env=env,
                                 capture_output=True, text=True, timeout=60)
        assert printed.returncode == 0, printed.stderr
        words = shlex.split(printed.stdout)
        return Path(words[words.index("--env-file") + 1])

    first = docker_env_file()
    broker.control().request("DELETE", f"/v1/tokens/{first.stem}")
    second = docker_env_file()
    assert second.exists() and not first.exists()
