"""Login at the point of use, on a real pseudo-terminal: `exec`, `env` and `login` ask for
the code where it is needed, and without a terminal say what to run, at once."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from tests.desktop import Terminal
from tests.harness import MFA_SERIAL, Broker
from tests.test_cli import ROLEBROKER, cli_env, rb, status_rows


def terminal(broker: Broker, *args: str) -> Terminal:
    return Terminal([str(ROLEBROKER), *args], cli_env(broker.daemon.settings.runtime_dir, TERM="dumb"))


def no_terminal(broker: Broker, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ROLEBROKER), *args], env=cli_env(broker.daemon.settings.runtime_dir),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)


def spaced(code: str) -> str:
    return f"{code[:3]} {code[3:]}"


def test_exec_asks_for_the_code_naming_profile_and_device_then_runs(broker: Broker) -> None:
    code = broker.next_code()
    term = terminal(broker, "exec", "dev", "--", "sh", "-c", 'echo "ran with $AWS_CONTAINER_CREDENTIALS_FULL_URI"')
    try:
        term.expect(f"MFA code for dev (MFA device {MFA_SERIAL}): ")
        term.send(b"12345\n")  # five digits: asked again, nothing sent
        term.expect("an MFA code is six digits")
        term.send(f"{spaced(code)}\n".encode())  # as authenticator apps show it
        term.expect(f"ran with {broker.url('dev')}")
        assert term.wait() == 0
    finally:
        term.kill()
    assert broker.sts.used_codes() == [code]
    assert "Traceback" not in term.output


def test_a_code_sts_rejects_is_asked_again(broker: Broker) -> None:
    code = broker.next_code()
    wrong = "000000" if code != "000000" else "111111"
    term = terminal(broker, "exec", "dev", "--", "true")
    try:
        term.expect("MFA code for dev")
        term.send(f"{wrong}\n".encode())
        term.expect("invalid MFA one time pass code")
        term.expect("MFA code for dev", timeout=10)
        term.send(f"{code}\n".encode())
        assert term.wait() == 0, term.output
    finally:
        term.kill()
    assert broker.sts.count("GetSessionToken", ok=True) == 1


def test_ctrl_c_at_the_prompt_leaves_cleanly_and_runs_nothing(broker: Broker, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    term = terminal(broker, "exec", "dev", "--", "touch", str(marker))
    try:
        term.expect("MFA code for dev")
        term.send(b"\x03")  # Ctrl-C, as the terminal turns it into SIGINT
        assert term.wait() == 130
    finally:
        term.kill()
    assert "Traceback" not in term.output and "KeyboardInterrupt" not in term.output
    assert not marker.exists()
    assert broker.sts.count("GetSessionToken") == 0


def test_ctrl_d_at_the_env_prompt_prints_nothing_to_eval(broker: Broker) -> None:
    term = terminal(broker, "env", "dev")
    try:
        term.expect("MFA code for dev")
        term.send(b"\x04")  # Ctrl-D: end of input
        assert term.wait() == 1
    finally:
        term.kill()
    assert "nothing was sent" in term.output
    assert "export" not in term.output and "Traceback" not in term.output
    assert broker.sts.count("GetSessionToken") == 0


def test_env_on_a_terminal_logs_in_then_prints_the_variables(broker: Broker) -> None:
    code = broker.next_code()
    term = terminal(broker, "env", "dev")
    try:
        term.expect("MFA code for dev")
        term.send(f"{code}\n".encode())
        term.expect("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        assert term.wait() == 0
    finally:
        term.kill()
    assert broker.raw_get("dev", broker.token("dev"))[0] == 200


def test_without_a_terminal_exec_and_env_fail_at_once_with_the_command(broker: Broker, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    started = time.monotonic()
    ran = no_terminal(broker, "exec", "dev", "--", "touch", str(marker))
    printed = no_terminal(broker, "env", "dev")
    assert time.monotonic() - started < 20  # nobody waits for a human who is not there
    for result in (ran, printed):
        assert result.returncode == 1
        assert "rolebroker login dev" in result.stderr and "not logged in" in result.stderr
        assert "Traceback" not in result.stderr
    assert not marker.exists()
    assert printed.stdout == ""  # `eval "$(rolebroker env dev)"` evaluates nothing
    assert broker.control().request("GET", "/v1/tokens")["tokens"] == []  # nothing minted either


def test_profiles_that_need_no_code_never_prompt(broker: Broker) -> None:
    broker.login("dev")
    result = no_terminal(broker, "exec", "prod", "--", "sh", "-c", "echo ran")
    assert result.returncode == 0 and result.stdout == "ran\n", result.stderr


def test_login_on_a_live_session_says_so_and_spends_no_code(broker: Broker) -> None:
    broker.login("dev")
    term = terminal(broker, "login", "prod")  # prod shares dev's MFA session
    try:
        term.expect("logged in already")
        assert term.wait() == 0
    finally:
        term.kill()
    assert "MFA code" not in term.output and "--force" in term.output
    assert broker.sts.count("GetSessionToken") == 1
    # Piped codes are not spent either.
    piped = rb(broker, "login", "dev", input=f"{broker.next_code()}\n")
    assert piped.returncode == 0 and "logged in already" in piped.stdout
    assert broker.sts.count("GetSessionToken") == 1


def test_login_force_renews_a_live_session(broker: Broker) -> None:
    broker.login("dev")
    code = broker.next_code()
    term = terminal(broker, "login", "dev", "--force")
    try:
        term.expect(f"MFA code for dev (MFA device {MFA_SERIAL}): ")
        term.send(f"{spaced(code)}\n".encode())
        term.expect("Logged in")
        assert term.wait() == 0
    finally:
        term.kill()
    assert broker.sts.count("GetSessionToken", ok=True) == 2 and broker.sts.used_codes()[-1] == code


def test_an_ended_session_says_when_it_ended(broker: Broker) -> None:
    broker.login("dev")
    broker.advance(13 * 3600)  # the 12 h session and the last role credentials have ended
    ended_at = time.strftime("%H:%M", time.localtime(broker.daemon.sessions.history.current(
        broker.daemon.sessions.root_session_source(broker.daemon.sessions.plan("dev")).key).ends_at))  # type: ignore[union-attr]
    expected = f"MFA session ended at {ended_at}, after 12 h"
    result = no_terminal(broker, "exec", "dev", "--", "true")
    assert result.returncode == 1 and expected in result.stderr, result.stderr
    status, _, body = broker.raw_get("dev", broker.token("dev"))
    assert status == 403 and body["message"] == f"{expected}: run `rolebroker login dev`"
    table = rb(broker, "status")
    assert status_rows(table.stdout)["dev"][2] == "login needed (rolebroker login dev)"
    assert f"dev: {expected}" in table.stdout
    row = next(r for r in json.loads(rb(broker, "status", "--json").stdout)["profiles"] if r["profile"] == "dev")
    assert row["mfa_session_ended"] == expected


def test_a_logout_says_when_too(broker: Broker) -> None:
    broker.login("dev")
    broker.advance(2 * 3600)
    assert rb(broker, "logout", "dev").returncode == 0
    result = no_terminal(broker, "env", "dev")
    assert result.returncode == 1 and "MFA session logged out at" in result.stderr and "after 2 h" in result.stderr
