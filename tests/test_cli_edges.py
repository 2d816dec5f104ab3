"""The CLI's rough edges, tried as a new user would: durations, lists, pipes, bad
environment variables, exit codes, --version and shell completion."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from rolebroker.broker import __version__
from rolebroker.clients.durations import parse_duration
from tests.harness import Broker
from tests.test_cli import ROLEBROKER, cli_env, rb


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("30m", 1800), ("8h", 28800), ("7d", 604800),
                                               ("1.5h", 5400), (" 8H ", 28800)])
def test_durations_read_one_way(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["8", "soon", "-1h", "0h", "8hours", ""])
def test_ambiguous_or_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration|longer than 0"):
        parse_duration(text)


def test_env_and_token_create_take_the_same_duration_syntax(broker: Broker) -> None:
    broker.login("dev")  # without a terminal, env refuses a profile that needs a code
    env = rb(broker, "env", "dev", "--ttl", "8h", "--format", "json")
    assert env.returncode == 0, env.stderr
    token = rb(broker, "token", "create", "--profile", "dev", "--name", "eight", "--ttl", "8h")
    assert token.returncode == 0, token.stderr
    rows = {r["name"]: r for r in broker.control().request("GET", "/v1/tokens")["tokens"]}
    eight = rows["eight"]
    env_row = next(r for n, r in rows.items() if n.startswith("host-dev-"))
    assert eight["expires_at"] - eight["created_at"] == pytest.approx(8 * 3600)
    assert env_row["expires_at"] - env_row["created_at"] == pytest.approx(8 * 3600)
    bare = rb(broker, "env", "dev", "--ttl", "8")
    assert bare.returncode == 2 and "did you mean 8h or 8d" in bare.stderr
    forever = rb(broker, "env", "dev", "--ttl", "0", "--format", "json")
    assert forever.returncode == 0, forever.stderr


def test_token_create_takes_a_comma_separated_list(broker: Broker) -> None:
    result = rb(broker, "token", "create", "--profile", "dev,prod", "--name", "both")
    assert result.returncode == 0, result.stderr
    row = next(r for r in broker.control().request("GET", "/v1/tokens")["tokens"] if r["name"] == "both")
    assert row["profiles"] == ["dev", "prod"]


def test_a_closed_pipe_is_no_traceback(broker: Broker) -> None:
    for n in range(30):
        broker.control().request("POST", "/v1/tokens", {"profiles": ["dev"], "name": f"t{n}"})
    piped = subprocess.run(f'"{ROLEBROKER}" token list | head -1', shell=True, capture_output=True, text=True,
                           env=cli_env(broker.daemon.settings.runtime_dir), timeout=60)
    assert piped.stdout.startswith("NAME")
    assert "Traceback" not in piped.stderr and "BrokenPipe" not in piped.stderr, piped.stderr


def test_a_bad_port_variable_is_named(tmp_path: Path) -> None:
    for args in (["status"], ["serve"], ["docker", "status"], ["service", "status"]):
        result = subprocess.run([str(ROLEBROKER), *args], env=cli_env(tmp_path / "run", ROLEBROKER_PORT="abc"),
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, (args, result.stderr)
        assert "ROLEBROKER_PORT='abc' is not a port number" in result.stderr
        assert "Traceback" not in result.stderr


def test_credential_process_help_is_help(tmp_path: Path) -> None:
    result = subprocess.run([str(ROLEBROKER), "credential-process", "--help"], env=cli_env(tmp_path / "run"),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "usage: rolebroker credential-process" in result.stdout


def test_status_exit_code_says_whether_something_needs_you(broker: Broker) -> None:
    before = rb(broker, "status", "--json")
    assert before.returncode == 1  # dev and prod need a login
    assert any(r["login_required"] for r in json.loads(before.stdout)["profiles"])
    broker.login("dev")
    after = rb(broker, "status")
    assert after.returncode == 0, after.stdout


def test_version() -> None:
    result = subprocess.run([str(ROLEBROKER), "--version"], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == f"rolebroker {__version__}"


def test_service_units_and_docker_hints_follow_the_port_variable(tmp_path: Path) -> None:
    recorder = tmp_path / "systemctl"
    recorder.write_text("#!/bin/sh\nexit 0\n")
    recorder.chmod(0o755)
    env = cli_env(tmp_path / "run", ROLEBROKER_PORT="9922", XDG_CONFIG_HOME=str(tmp_path / "config"),
                  ROLEBROKER_SYSTEMCTL=str(recorder), HOME=str(tmp_path))
    installed = subprocess.run([str(ROLEBROKER), "service", "install"], env=env, capture_output=True, text=True,
                               timeout=60)
    assert installed.returncode == 0, installed.stderr
    socket_unit = (tmp_path / "config" / "systemd" / "user" / "rolebroker.socket").read_text()
    assert "\nListenStream=127.0.0.1:9922\n" in socket_unit and ":9911" not in socket_unit
    docker = subprocess.run([str(ROLEBROKER), "docker", "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert "$ROLEBROKER_PORT" in docker.stdout


def _bash_complete(line: str, env: dict[str, str]) -> list[str]:
    """What bash offers for `line` (the cursor at its end), with the script `completion bash` prints."""
    words = line.split(" ")
    script = (f'eval "$("{ROLEBROKER}" completion bash)"\n'
              f'COMP_WORDS=({" ".join(json.dumps(w) for w in words)}); COMP_CWORD={len(words) - 1}\n'
              '_rolebroker; printf "%s\\n" "${COMPREPLY[@]}"\n')
    path = os.pathsep.join([str(ROLEBROKER.parent), env.get("PATH", "")])
    result = subprocess.run(["bash", "-c", script], env={**env, "PATH": path}, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return [w for w in result.stdout.splitlines() if w]


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completion_offers_commands_options_and_profiles(tmp_path: Path) -> None:
    (tmp_path / "config").write_text("[default]\nregion = eu-west-1\n[profile dev]\nrole_arn = x\n"
                                     "[profile prod-eu]\nrole_arn = y\n")
    (tmp_path / "credentials").write_text("[alice]\naws_access_key_id = AKIA\n")
    env = cli_env(tmp_path / "run", AWS_CONFIG_FILE=str(tmp_path / "config"),
                  AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "credentials"))
    assert "login" in _bash_complete("rolebroker lo", env) and "logout" in _bash_complete("rolebroker lo", env)
    assert _bash_complete("rolebroker login pr", env) == ["prod-eu"]
    assert set(_bash_complete("rolebroker exec ", env)) == {"default", "dev", "prod-eu", "alice"}
    assert "--output" in _bash_complete("rolebroker env --o", env)
    assert _bash_complete("rolebroker token c", env) == ["create"]
    assert "--all-profiles" in _bash_complete("rolebroker token --a", env)


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_other_shells_get_a_script_their_shell_accepts(shell: str) -> None:
    script = subprocess.run([str(ROLEBROKER), "completion", shell], capture_output=True, text=True, timeout=60)
    assert script.returncode == 0 and "rolebroker" in script.stdout
    binary = shutil.which(shell)
    if binary is None:
        pytest.skip(f"{shell} is not installed: the script was generated but not loaded")
    check = [binary, "-n"] if shell == "zsh" else [binary, "--no-execute"]
    loaded = subprocess.run([*check], input=script.stdout, capture_output=True, text=True, timeout=60)
    assert loaded.returncode == 0, loaded.stderr
