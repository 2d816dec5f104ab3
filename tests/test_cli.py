"""The `rolebroker` command line as a user meets it: real subprocesses against the
in-process daemon (strict STS double, manual clock). Every failure is an exit code and a
message in plain words, never a traceback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.harness import DEV_ROLE, PROD_ROLE, Broker

BIN = Path(sys.executable).parent
ROLEBROKER = BIN / "rolebroker"


# ---- helpers ----------------------------------------------------------------------------------

def cli_env(runtime_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ROLEBROKER_"))}
    env["ROLEBROKER_RUNTIME_DIR"] = str(runtime_dir)
    env.update(extra)
    return env


def run(runtime_dir: Path, *args: str, input: str | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(ROLEBROKER), *args], env=env or cli_env(runtime_dir), input=input,
                            capture_output=True, text=True, timeout=60)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def rb(broker: Broker, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return run(broker.daemon.settings.runtime_dir, *args, **kwargs)


def tokens(broker: Broker) -> set[str]:
    return {row["name"] for row in broker.control().request("GET", "/v1/tokens")["tokens"]}


def status_rows(output: str) -> dict[str, list[str]]:
    """`rolebroker status` table rows by profile, cut at the header's column starts."""
    lines = output.splitlines()
    header = lines[0]
    names = ["PROFILE", "ROLE", "CREDENTIALS", "MFA SESSION", "LAST ERROR"]
    starts = [header.index(name) for name in names]
    assert starts == sorted(starts), header
    rows: dict[str, list[str]] = {}
    for line in lines[1:]:
        if not line.strip():
            break  # notes follow the blank line
        cells = [line[a:b].strip() for a, b in zip(starts, starts[1:] + [None])]  # type: ignore[list-item]
        rows[cells[0]] = cells[1:]
    return rows


# ---- 6. exec ----------------------------------------------------------------------------------

def test_exec_returns_the_command_exit_code(broker: Broker) -> None:
    broker.login("dev")  # exec needs a session: without a terminal it would not ask
    assert rb(broker, "exec", "dev", "--", "sh", "-c", "exit 7").returncode == 7
    assert rb(broker, "exec", "dev", "--", "sh", "-c", "exit 0").returncode == 0
    # Killed by a signal: 128 + its number, as shells report it.
    assert rb(broker, "exec", "dev", "--", "sh", "-c", 'kill -TERM "$$"').returncode == 128 + 15


def test_exec_points_the_command_at_the_endpoint(broker: Broker) -> None:
    broker.login("dev")  # exec needs a session: without a terminal it would not ask
    result = rb(broker, "exec", "dev", "--", "printenv", "AWS_CONTAINER_CREDENTIALS_FULL_URI")
    assert result.returncode == 0, result.stderr
    assert result.stdout == broker.url("dev") + "\n"


def test_exec_token_works_during_the_command_and_is_revoked_after(broker: Broker) -> None:
    broker.login("dev")
    broker.settle()
    own = broker.token("dev")
    before = tokens(broker)
    child = ("import botocore.credentials, os\n"
             "print(os.environ['AWS_CONTAINER_AUTHORIZATION_TOKEN'])\n"
             "print(botocore.credentials.ContainerProvider().load().get_frozen_credentials().access_key)\n")
    result = rb(broker, "exec", "dev", "--", sys.executable, "-c", child)
    assert result.returncode == 0, result.stderr
    token, access_key = result.stdout.split()
    status, _, body = broker.raw_get("dev", own)
    assert status == 200 and access_key == body["AccessKeyId"]  # the child was served while it ran

    status, _, body = broker.raw_get("dev", token)
    assert (status, body["code"]) == (401, "InvalidToken")
    assert tokens(broker) == before


def test_exec_of_a_missing_command_exits_127_and_revokes(broker: Broker) -> None:
    broker.login("dev")  # exec needs a session: without a terminal it would not ask
    before = tokens(broker)
    result = rb(broker, "exec", "dev", "--", "rolebroker-test-no-such-command")
    assert result.returncode == 127
    assert "command not found: rolebroker-test-no-such-command" in result.stderr
    assert tokens(broker) == before


def test_exec_hides_shadowing_variables_from_the_child(broker: Broker) -> None:
    broker.login("dev")  # exec needs a session: without a terminal it would not ask
    env = cli_env(broker.daemon.settings.runtime_dir, AWS_PROFILE="prod", AWS_ACCESS_KEY_ID="AKIAJUNKJUNKJUNKJUNK",
                  AWS_SECRET_ACCESS_KEY="junk", AWS_SESSION_TOKEN="junk")
    script = 'printf "%s|%s|%s|%s" "${AWS_PROFILE-unset}" "${AWS_ACCESS_KEY_ID-unset}" ' \
             '"${AWS_SECRET_ACCESS_KEY-unset}" "${AWS_SESSION_TOKEN-unset}"'
    result = rb(broker, "exec", "dev", "--", "sh", "-c", script, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "unset|unset|unset|unset"


def test_exec_without_a_command_prints_usage(broker: Broker) -> None:
    result = rb(broker, "exec", "dev")
    assert result.returncode == 2 and "rolebroker exec PROFILE -- COMMAND" in result.stderr


# ---- 7. status ----------------------------------------------------------------------------------

def test_status_table_and_json(broker: Broker) -> None:
    before = rb(broker, "status")
    assert before.returncode == 1  # dev needs a login: something needs the user
    assert status_rows(before.stdout)["dev"] == [DEV_ROLE, "none yet", "login needed (rolebroker login dev)", "-"]

    broker.login("dev")
    broker.settle()
    broker.advance(600)
    table = rb(broker, "status")
    assert table.returncode == 0, table.stderr
    rows = status_rows(table.stdout)
    # Role credentials last 1 h (the chaining cap), the MFA session 12 h; ten minutes have passed.
    assert rows["dev"] == [DEV_ROLE, "50m", "11h50m", "-"]
    assert rows["prod"] == [PROD_ROLE, "50m", "11h50m", "-"]
    assert "prod: duration_seconds 7200 capped to 3600" in table.stdout

    result = rb(broker, "status", "--json")
    assert result.returncode == 0
    document = json.loads(result.stdout)
    assert document["running"] is True
    dev = next(row for row in document["profiles"] if row["profile"] == "dev")
    now = broker.clock.now()
    assert dev["role_arn"] == DEV_ROLE
    assert dev["credentials_expire_at"] - now == 3000
    assert dev["mfa_session_expires_at"] - now == 12 * 3600 - 600
    assert dev["last_error"] is None and dev["login_required"] is False


def test_status_shows_the_last_error(broker: Broker) -> None:
    broker.login("dev")
    broker.settle()
    broker.sts.inject_fault("AssumeRole", "throttling", times=1000)
    broker.advance(41 * 60)  # past the refresh time: the renewal fails, the old credentials still serve
    table = rb(broker, "status")
    assert table.returncode == 0
    last_error = status_rows(table.stdout)["dev"][3]
    assert last_error != "-" and "STS" in last_error, table.stdout
    dev = next(r for r in json.loads(rb(broker, "status", "--json").stdout)["profiles"] if r["profile"] == "dev")
    assert dev["last_error"] == last_error


def test_status_when_the_daemon_is_not_running(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run(empty, "status")
    assert result.returncode == 3
    assert "not running" in result.stdout and "rolebroker serve" in result.stdout
    as_json = run(empty, "status", "--json")
    assert as_json.returncode == 3
    document = json.loads(as_json.stdout)
    assert document["running"] is False and "rolebroker serve" in document["message"]


def test_status_with_stale_runtime_files_is_not_running(tmp_path: Path) -> None:
    stale = tmp_path / "stale"
    stale.mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX) as dead:  # the socket file of a daemon killed with SIGKILL
        dead.bind(str(stale / "control.sock"))
    (stale / "control.sock").chmod(0o600)
    (stale / "daemon.json").write_text(json.dumps({"pid": 1, "port": 9}))
    (stale / "daemon.json").chmod(0o600)
    result = run(stale, "status")
    assert result.returncode == 3 and "not running" in result.stdout


def test_runtime_files_others_could_have_written_are_not_trusted(tmp_path: Path) -> None:
    planted = tmp_path / "planted"
    planted.mkdir(mode=0o700)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(planted / "control.sock"))
    listener.listen()
    try:
        (planted / "control.sock").chmod(0o666)  # open to anyone: someone else may have put it there
        result = run(planted, "status")
        assert result.returncode == 3 and "not trusted" in result.stdout
        (planted / "control.sock").chmod(0o600)
        planted.chmod(0o755)  # a directory others can list and traverse is no private directory
        result = run(planted, "status")
        assert result.returncode == 3 and "not trusted" in result.stdout
        planted.chmod(0o700)
        os.symlink(planted, tmp_path / "link")
        result = run(tmp_path / "link", "status")
        assert result.returncode == 3 and "not trusted" in result.stdout
        listener.settimeout(0)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected to the untrusted socket: not a byte was sent
    finally:
        listener.close()


# ---- 7. login / logout / reload ---------------------------------------------------------------

def test_login_with_a_wrong_code_says_why(broker: Broker) -> None:
    wrong = "000000" if broker.next_code() != "000000" else "111111"
    result = rb(broker, "login", "dev", "--code", wrong)
    assert result.returncode == 1
    assert "login failed" in result.stderr and "invalid MFA one time pass code" in result.stderr
    assert broker.raw_get("dev", broker.token("dev"))[2]["code"] == "LoginRequired"


def test_login_reads_one_line_from_stdin(broker: Broker) -> None:
    code = broker.next_code()
    result = rb(broker, "login", "dev", input=f"{code}\nnot-read\n")
    assert result.returncode == 0, result.stderr
    assert "Logged in" in result.stdout and "dev, prod" in result.stdout
    assert broker.sts.used_codes() == [code]
    assert broker.raw_get("dev", broker.token("dev"))[0] == 200


@pytest.mark.parametrize("args, wiped", [(["dev"], "dev, prod"), (["--all"], "dev, prod")], ids=["profile", "all"])
def test_logout_wipes_sessions(broker: Broker, args: list[str], wiped: str) -> None:
    broker.login("dev")
    broker.settle()
    assert broker.raw_get("prod", broker.token("prod"))[0] == 200
    result = rb(broker, "logout", *args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"Wiped from memory: {wiped}"
    for profile in ("dev", "prod"):
        status, _, body = broker.raw_get(profile, broker.token(profile))
        assert (status, body["code"]) == (403, "LoginRequired")
        assert f"rolebroker login {profile}" in body["message"]


def test_reload_with_a_broken_file_keeps_serving(broker: Broker) -> None:
    broker.login("dev")
    broker.settle()
    config = Path(broker.files.config_file)
    good = config.read_text()
    config.write_text("region = us-east-1\n" + good)  # a setting before any [section]
    result = rb(broker, "reload")
    assert result.returncode == 1
    assert "cannot parse" in result.stderr and str(config) in result.stderr
    assert "still serving the last good config" in result.stderr
    assert broker.raw_get("dev", broker.token("dev"))[0] == 200

    config.write_text(good)
    fixed = rb(broker, "reload")
    assert fixed.returncode == 0 and fixed.stdout.startswith("Config reloaded"), fixed.stderr


@pytest.mark.parametrize("args", [
    ["env", "nope"],
    ["login", "nope", "--code", "123456"],
    ["token", "create", "--profile", "nope"],
    ["credential-process", "nope"],
    ["exec", "nope", "--", "true"],
], ids=["env", "login", "token-create", "credential-process", "exec"])
def test_unknown_profile_is_a_clear_error(broker: Broker, args: list[str]) -> None:
    before = tokens(broker)
    result = rb(broker, *args)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "no profile 'nope'" in result.stderr and "rolebroker status" in result.stderr
    assert tokens(broker) == before  # nothing was minted for it


def test_profile_name_with_a_slash_is_a_clear_error(broker: Broker) -> None:
    result = rb(broker, "env", "team/dev")
    assert result.returncode == 2  # a usage error, as argparse reports it
    assert "team/dev" in result.stderr


def test_token_create_with_a_bad_ttl_is_a_clear_error(broker: Broker) -> None:
    result = rb(broker, "token", "create", "--profile", "dev", "--ttl", "soon")
    assert result.returncode == 2  # a usage error, before anything reaches the daemon
    assert "'soon' is not a duration" in result.stderr


# ---- 8. serve -----------------------------------------------------------------------------------

def test_serve_on_a_port_in_use_fails_clearly(tmp_path: Path) -> None:
    runtime = tmp_path / "run"
    env = cli_env(runtime, HOME=str(tmp_path), ROLEBROKER_STATE_DIR=str(tmp_path / "state"),
                  AWS_CONFIG_FILE=str(tmp_path / "config"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "credentials"))
    env.pop("LISTEN_FDS", None)
    env.pop("LISTEN_PID", None)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run(runtime, "serve", "--port", str(port), env=env)
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is in use by another program" in result.stderr
    assert "rolebroker status" not in result.stderr  # whoever holds the port would answer a TCP status
    assert not (runtime / "control.sock").exists() and not (runtime / "daemon.json").exists()
