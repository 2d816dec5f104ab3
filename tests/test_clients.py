"""Clients of the daemon, driven through the real `rolebroker` CLI (subprocesses) against the
real daemon (in-process, strict STS double, manual clock): scoped client tokens, their
survival across a restart, `env` in every output format read back by the program that
consumes it, `--token-file`, and `credential-process` as botocore and the AWS CLI run it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import configparser
import datetime as dt
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any
from collections.abc import Callable

import botocore.credentials
import botocore.session
import pytest

from rolebroker.broker.clock import ManualClock
from rolebroker.broker.config import ConfigFiles
from rolebroker.broker.server import Daemon, DaemonSettings
from rolebroker.broker.tokens import digest
from rolebroker.clients.envfmt import FORMATS
from tests.harness import CONFIG_LAYOUT, DEV_ROLE, OPEN_ROLE, Broker, alice, start_broker

BIN = Path(sys.executable).parent
ROLEBROKER = BIN / "rolebroker"
AWS = BIN / "aws"

DEV_ARN_PREFIX = "arn:aws:sts::222222222222:assumed-role/dev/"
TOKEN_SHAPE = re.compile(r"rbt_[A-Za-z0-9_-]{43}")
FULL_URI = "AWS_CONTAINER_CREDENTIALS_FULL_URI"
TOKEN_VAR = "AWS_CONTAINER_AUTHORIZATION_TOKEN"
TOKEN_FILE_VAR = "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"

# Variables that outrank the container provider (docs/SDK-COMPATIBILITY.md): set in the parent
# shell, `env` output must remove them.
SHADOWING = {
    "AWS_PROFILE": "default",
    "AWS_DEFAULT_PROFILE": "default",
    "AWS_ACCESS_KEY_ID": "AKIAJUNKJUNKJUNKJUNK",
    "AWS_SECRET_ACCESS_KEY": "junk-secret",
    "AWS_SESSION_TOKEN": "junk-token",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/junk",
}

OPEN_LAYOUT = {"credentials": CONFIG_LAYOUT["credentials"],
               "config": f"[profile open]\nrole_arn = {OPEN_ROLE}\nsource_profile = alice\n"}


# ---- helpers ----------------------------------------------------------------------------------

def base_env(broker: Broker, **extra: str) -> dict[str, str]:
    """The caller's environment without AWS variables, pointed at the test daemon."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ROLEBROKER_"))}
    env["ROLEBROKER_RUNTIME_DIR"] = str(broker.daemon.settings.runtime_dir)
    env.update(extra)
    return env


def clean_env(broker: Broker, **extra: str) -> dict[str, str]:
    """A minimal environment for shells whose `env` output is parsed line by line."""
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(broker.tmp), "LC_ALL": "C",
           "ROLEBROKER_RUNTIME_DIR": str(broker.daemon.settings.runtime_dir)}
    if "PYTHONPATH" in os.environ:  # the CLI runs the same code as the test
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    env.update(extra)
    return env


def rb(broker: Broker, *args: str, input: str | None = None, env: dict[str, str] | None = None,
       cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(ROLEBROKER), *args], env=env or base_env(broker), input=input,
                            capture_output=True, text=True, timeout=60, cwd=cwd)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def rb_ok(broker: Broker, *args: str, **kwargs: Any) -> str:
    result = rb(broker, *args, **kwargs)
    assert result.returncode == 0, f"rolebroker {' '.join(args)} exited {result.returncode}: {result.stderr}"
    return result.stdout


def fetch(broker: Broker, profile: str, token: str) -> tuple[int, dict[str, Any]]:
    """One credentials request; a 503 (fetch from STS still running) is waited out once."""
    status, _, body = broker.raw_get(profile, token)
    if status == 503:
        broker.settle()
        status, _, body = broker.raw_get(profile, token)
    return status, body


def served(broker: Broker, profile: str) -> dict[str, Any]:
    status, body = fetch(broker, profile, broker.token(profile))
    assert status == 200, body
    return body


def parse_env_dump(text: str) -> dict[str, str]:
    """`env` output of a minimal environment (no value holds a newline)."""
    pairs = [line.partition("=") for line in text.splitlines() if line]
    return {name: value for name, sep, value in pairs if sep}


def token_rows(broker: Broker) -> dict[str, list[str]]:
    """`rolebroker token list` as {name: columns}; asserts the header."""
    lines = rb_ok(broker, "token", "list").splitlines()
    assert lines[0].split() == ["NAME", "PROFILES", "CREATED", "EXPIRES", "LAST", "USED"]
    return {line.split()[0]: line.split()[1:] for line in lines[1:] if line.strip()}


def stamp(epoch: float) -> list[str]:
    """How `token list` prints a time: local date and minute, two columns."""
    return dt.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M").split()


# ---- 1. scoped tokens -------------------------------------------------------------------------

def test_token_create_serves_its_profile_and_refuses_others(broker: Broker) -> None:
    token = rb_ok(broker, "token", "create", "--profile", "dev", "--name", "ci", "--ttl", "8h").strip()
    assert TOKEN_SHAPE.fullmatch(token), token
    broker.login("dev")
    broker.settle()

    provider = botocore.credentials.ContainerProvider(environ={FULL_URI: broker.url("dev"), TOKEN_VAR: token})
    credentials = provider.load()
    assert credentials is not None
    assert credentials.get_frozen_credentials().access_key == served(broker, "dev")["AccessKeyId"]

    status, _, body = broker.raw_get("prod", token)
    assert (status, body["code"]) == (403, "ProfileNotAllowed")
    assert "'ci'" in body["message"] and "'prod'" in body["message"] and "dev" in body["message"]


def test_token_list_shows_metadata_and_never_the_value(broker: Broker) -> None:
    created_at = broker.clock.now()
    ci = rb_ok(broker, "token", "create", "--profile", "dev", "--name", "ci", "--ttl", "8h").strip()
    both = rb_ok(broker, "token", "create", "--profile", "dev", "--profile", "prod", "--name", "both").strip()

    listing = rb_ok(broker, "token", "list")
    assert ci not in listing and both not in listing and "rbt_" not in listing
    rows = token_rows(broker)
    assert rows["ci"] == ["dev", *stamp(created_at), *stamp(created_at + 8 * 3600), "-"]
    assert rows["both"] == ["dev,prod", *stamp(created_at), "-", "-"]

    broker.login("dev")
    broker.clock.advance(120)
    used_at = broker.clock.now()
    assert fetch(broker, "dev", ci)[0] == 200
    rows = token_rows(broker)
    assert rows["ci"][-2:] == stamp(used_at)
    assert rows["both"][-1] == "-"
    assert ci not in rb_ok(broker, "token", "list")


def test_revoked_token_gets_401(broker: Broker) -> None:
    broker.login("dev")
    token = rb_ok(broker, "token", "create", "--profile", "dev", "--name", "ci").strip()
    assert fetch(broker, "dev", token)[0] == 200

    assert rb_ok(broker, "token", "revoke", "ci").strip() == "Revoked ci"

    status, _, body = broker.raw_get("dev", token)
    assert (status, body["code"]) == (401, "InvalidToken")
    assert "ci" not in token_rows(broker)
    again = rb(broker, "token", "revoke", "ci")
    assert again.returncode == 1 and "no token named 'ci'" in again.stderr


def test_token_ttl_ends_on_the_daemon_clock(broker: Broker) -> None:
    broker.login("dev")
    token = rb_ok(broker, "token", "create", "--profile", "dev", "--name", "ci", "--ttl", "8h").strip()
    broker.advance(8 * 3600 - 60)
    assert fetch(broker, "dev", token)[0] == 200
    broker.advance(60)
    status, _, body = broker.raw_get("dev", token)
    assert (status, body["code"]) == (401, "InvalidToken")


def test_token_with_two_profiles_serves_both(broker: Broker) -> None:
    broker.login("dev")
    token = rb_ok(broker, "token", "create", "--profile", "dev", "--profile", "prod", "--name", "both").strip()
    dev_status, dev = fetch(broker, "dev", token)
    prod_status, prod = fetch(broker, "prod", token)
    assert (dev_status, prod_status) == (200, 200)
    assert dev["RoleArn"] == DEV_ROLE and prod["RoleArn"] != DEV_ROLE


def test_a_new_token_under_a_revoked_name_was_never_used(broker: Broker) -> None:
    broker.login("dev")
    old = rb_ok(broker, "token", "create", "--profile", "dev", "--name", "ci").strip()
    assert fetch(broker, "dev", old)[0] == 200
    rb_ok(broker, "token", "revoke", "ci")
    rb_ok(broker, "token", "create", "--profile", "dev", "--name", "ci")
    assert token_rows(broker)["ci"][-1] == "-"


# ---- 2. restart survival ----------------------------------------------------------------------

def test_tokens_survive_a_restart_as_digests_and_no_credential_touches_disk(tmp_path: Path) -> None:
    first = start_broker(tmp_path)
    secrets: set[str] = set()
    try:
        token = rb_ok(first, "token", "create", "--profile", "dev", "--name", "ci", "--ttl", "8h").strip()
        created_at = first.clock.now()
        first.login("dev")
        assert fetch(first, "dev", token)[0] == 200
        first.settle()
        secrets |= {s for c in first.sts.issued() for s in (c.access_key_id, c.secret_access_key, c.session_token)}
        clock_now = first.clock.now()
    finally:
        first.stop()
    assert not (tmp_path / "run" / "daemon.json").exists()  # the CLI sees no stale daemon

    second = start_broker(tmp_path, clock=ManualClock(start=clock_now))
    try:
        assert second.daemon.settings.state_dir == first.daemon.settings.state_dir == tmp_path / "state"
        # Known token, no session yet: the daemon says what to do instead of "unknown token".
        status, _, body = second.raw_get("dev", token)
        assert (status, body["code"]) == (403, "LoginRequired"), body
        assert "rolebroker login dev" in body["message"]
        second.login("dev")
        status, body = fetch(second, "dev", token)
        assert status == 200
        assert token_rows(second)["ci"][:5] == ["dev", *stamp(created_at), *stamp(created_at + 8 * 3600)]
        second.settle()
        secrets |= {s for c in second.sts.issued() for s in (c.access_key_id, c.secret_access_key, c.session_token)}
        assert body["AccessKeyId"] in secrets and body["Token"] in secrets

        tokens_file = tmp_path / "state" / "tokens.json"
        assert stat.S_IMODE(tokens_file.stat().st_mode) == 0o600
        content = tokens_file.read_text()
        assert token not in content and token[len("rbt_"):] not in content
        assert digest(token) in content
        records = json.loads(content)["tokens"]
        assert [r["name"] for r in records] == ["ci"]

        on_disk = [p for p in tmp_path.rglob("*") if p.is_file()]
        assert tokens_file in on_disk and tmp_path / "run" / "daemon.json" in on_disk
        for path in on_disk:
            data = path.read_bytes()
            leaked = sorted(s[:8] + "..." for s in secrets if s.encode() in data)
            assert not leaked, f"{path} holds AWS credentials: {leaked}"

        # The expiry survived too.
        second.advance(8 * 3600)
        assert second.raw_get("dev", token)[0] == 401
    finally:
        second.stop()


def test_a_stop_before_serving_begins_is_honoured(tmp_path: Path) -> None:
    settings = DaemonSettings(files=ConfigFiles(str(tmp_path / "config"), str(tmp_path / "credentials")),
                              runtime_dir=tmp_path / "run", state_dir=tmp_path / "state", port=0)
    daemon = Daemon(settings, clock=ManualClock())
    sock = daemon.bind()
    try:
        daemon.stop()  # e.g. the harness's Broker.stop() right after start_broker()

        async def serve_briefly() -> bool:
            try:
                await asyncio.wait_for(daemon.serve([sock]), timeout=2)
            except TimeoutError:
                return False
            return True

        assert asyncio.run(serve_briefly()), "still serving 2 s after stop()"
    finally:
        sock.close()


# ---- 3. env formats, read back by their consumers ---------------------------------------------

def parse_json_format(text: str) -> tuple[dict[str, str], list[str]]:
    parsed = json.loads(text)
    assert set(parsed) == {"set", "unset"}
    assert all(isinstance(v, str) for v in parsed["set"].values())
    return parsed["set"], parsed["unset"]


def parse_docker_env_file(text: str) -> dict[str, str]:
    """docker's --env-file grammar, from its documentation: one VAR=VAL per line, the value
    taken verbatim (no quote processing, no escapes), lines starting with # are comments,
    blank lines are skipped, leading whitespace is ignored; a name holding whitespace is an
    error; a line without `=` takes the variable from the caller's environment."""
    result: dict[str, str] = {}
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.removesuffix("\r").lstrip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert name, f"line {number}: no variable name"
        assert not re.search(r"\s", name), f"line {number}: variable {name!r} contains whitespace"
        assert sep, f"line {number}: {name} has no value; docker would take it from its own environment"
        result[name] = value
    return result


def parse_dotenv_format(text: str) -> tuple[dict[str, str], list[str]]:
    assert text.endswith("\n") and "\r" not in text
    values = parse_docker_env_file(text)
    lines = [line for line in text.split("\n") if line]
    assert len(lines) == len(values), "every line is one variable: no comments, continuations or duplicates"
    for name, value in values.items():
        # Docker keeps quotes: a quoted value would reach the SDK with the quotes in it.
        assert value[:1] not in ("'", '"') and value == value.strip(), (name, value)
    return values, []


def parse_docker_format(text: str) -> tuple[dict[str, str], list[str]]:
    """`-e NAME=value` flags plus one `--env-file PATH`, as `docker run` reads them. The token
    must be in the file (0600), never on the command line where `ps` shows it."""
    words = shlex.split(text)
    assert len(words) % 2 == 0 and set(words[::2]) <= {"-e", "--env-file"}, words
    values: dict[str, str] = {}
    for flag, word in zip(words[::2], words[1::2]):
        if flag == "--env-file":
            assert os.stat(word).st_mode & 0o777 == 0o600
            values.update(parse_docker_env_file(Path(word).read_text()))
        else:
            name, sep, value = word.partition("=")
            assert sep and name != "AWS_CONTAINER_AUTHORIZATION_TOKEN", word
            values[name] = value
    return values, []


FISH_UNSET = re.compile(r"set -e ([A-Za-z_][A-Za-z0-9_]*);")
FISH_SET = re.compile(r"set -gx ([A-Za-z_][A-Za-z0-9_]*) '((?:[^'\\]|\\.)*)';")


def parse_fish_format(text: str) -> tuple[dict[str, str], list[str]]:
    """fish's single-quote rules: only \\' and \\\\ are escapes inside '...'."""
    assert text.endswith("\n")
    values: dict[str, str] = {}
    unset: list[str] = []
    for line in text.splitlines():
        if match := FISH_UNSET.fullmatch(line):
            unset.append(match.group(1))
        elif match := FISH_SET.fullmatch(line):
            values[match.group(1)] = re.sub(r"\\(['\\])", r"\1", match.group(2))
        else:
            pytest.fail(f"not a fish `set` line: {line!r}")
    return values, unset


PS_UNSET = re.compile(r"Remove-Item Env:([A-Za-z_][A-Za-z0-9_]*) -ErrorAction SilentlyContinue")
# PowerShell's single-quote-character is ' or a typographic quote U+2018-U+201B: any of them ends a
# verbatim string, and two in a row stand for the second one (the language spec's verbatim-string-part).
PS_QUOTES = "'\u2018\u2019\u201a\u201b"
PS_SET = re.compile(rf"\$Env:([A-Za-z_][A-Za-z0-9_]*) = [{PS_QUOTES}]((?:[^{PS_QUOTES}]|[{PS_QUOTES}]{{2}})*)[{PS_QUOTES}]")


def parse_powershell_format(text: str) -> tuple[dict[str, str], list[str]]:
    assert text.endswith("\n")
    values: dict[str, str] = {}
    unset: list[str] = []
    for line in text.splitlines():
        if match := PS_UNSET.fullmatch(line):
            unset.append(match.group(1))
        elif match := PS_SET.fullmatch(line):
            values[match.group(1)] = re.sub(f"[{PS_QUOTES}]([{PS_QUOTES}])", r"\1", match.group(2))
        else:
            pytest.fail(f"not a PowerShell environment line: {line!r}")
    return values, unset


PARSERS: dict[str, Callable[[str], tuple[dict[str, str], list[str]]]] = {
    "json": parse_json_format,
    "dotenv": parse_dotenv_format,
    "docker": parse_docker_format,
    "fish": parse_fish_format,
    "powershell": parse_powershell_format,
}


def check_environment(broker: Broker, values: dict[str, str], fmt: str) -> None:
    """What any format must carry: the URL, a working token, and the profile's region."""
    assert values[FULL_URI] == broker.url("dev")
    token = values[TOKEN_VAR]
    assert TOKEN_SHAPE.fullmatch(token), token
    status, body = fetch(broker, "dev", token)
    assert status == 200, (fmt, body)
    assert body["AccessKeyId"] == served(broker, "dev")["AccessKeyId"]
    if fmt == "docker":
        assert values["AWS_REGION"] == "eu-west-1"
        assert values["NO_PROXY"]  # Go would send 169.254.170.x through HTTP_PROXY
        assert "AWS_SHARED_CREDENTIALS_FILE" not in values  # a host path means nothing in a container
    else:
        # [default] holds Alice's keys: the credentials file is hidden, and a stand-in config
        # (no secrets) makes [default] the broker's, with dev's region.
        assert values["AWS_SHARED_CREDENTIALS_FILE"] == os.devnull
        stand_in = configparser.RawConfigParser()
        assert stand_in.read(values["AWS_CONFIG_FILE"]) == [values["AWS_CONFIG_FILE"]]
        assert stand_in["default"]["region"] == "eu-west-1"
        assert "aws_access_key_id" not in Path(values["AWS_CONFIG_FILE"]).read_text()


def test_env_sh_is_evaluated_by_sh(broker: Broker) -> None:
    broker.login("dev")
    script = 'out=$("$0" env dev --format sh) || exit 99\neval "$out" || exit 98\nenv\n'
    result = subprocess.run(["sh", "-c", script, str(ROLEBROKER)], env=clean_env(broker, **SHADOWING),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    after = parse_env_dump(result.stdout)
    assert {name: after[name] for name in SHADOWING if name in after} == {}
    check_environment(broker, after, "sh")
    assert after["ROLEBROKER_RUNTIME_DIR"] == str(broker.daemon.settings.runtime_dir)  # others untouched


@pytest.mark.parametrize("fmt", sorted(PARSERS))
def test_env_format_parsed_by_its_consumer(broker: Broker, fmt: str) -> None:
    broker.login("dev")
    output = rb_ok(broker, "env", "dev", "--format", fmt)
    values, unset = PARSERS[fmt](output)
    check_environment(broker, values, fmt)
    if fmt in ("json", "fish", "powershell"):  # the formats that can remove variables
        assert set(SHADOWING) <= set(unset), set(SHADOWING) - set(unset)
        assert not set(unset) & set(values)


@pytest.mark.skipif(shutil.which("fish") is None,
                    reason="fish is not installed: its output is checked by test_env_format_parsed_by_its_consumer[fish]")
def test_env_fish_runs_in_fish(broker: Broker) -> None:
    fish = shutil.which("fish")
    assert fish is not None
    broker.login("dev")
    output = rb_ok(broker, "env", "dev", "--format", "fish")
    result = subprocess.run([fish, "--no-config", "-c", output + "\nenv\n"], env=clean_env(broker, **SHADOWING),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    after = parse_env_dump(result.stdout)
    assert {name: after[name] for name in SHADOWING if name in after} == {}
    check_environment(broker, after, "fish")


@pytest.mark.skipif(shutil.which("pwsh") is None, reason="pwsh is not installed: its output is checked by "
                                                          "test_env_format_parsed_by_its_consumer[powershell]")
def test_env_powershell_runs_in_pwsh(broker: Broker) -> None:
    pwsh = shutil.which("pwsh")
    assert pwsh is not None
    broker.login("dev")
    output = rb_ok(broker, "env", "dev", "--format", "powershell")
    script = broker.tmp / "env.ps1"
    script.write_text(output + 'Get-ChildItem Env: | ForEach-Object { "$($_.Name)=$($_.Value)" }\n')
    result = subprocess.run([pwsh, "-NoLogo", "-NoProfile", "-NonInteractive", "-File", str(script)],
                            env=clean_env(broker, **SHADOWING), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    after = parse_env_dump(result.stdout)
    assert {name: after[name] for name in SHADOWING if name in after} == {}
    check_environment(broker, after, "powershell")


# The renderers on their own, with values a path or a name could hold: each syntax must carry
# them through its consumer byte for byte.
AWKWARD = "it's \"q\" $HOME `id` $(id) \\n \\ ;&|*?~ #{a,b} caf\u00e9 %PATH% ${x} \t two  spaces "


def test_sh_renderer_round_trips_awkward_values_through_sh() -> None:
    script = FORMATS["sh"]({"AWKWARD": AWKWARD}, ["AWS_PROFILE"]) + 'printf "%s|%s" "$AWKWARD" "${AWS_PROFILE-unset}"'
    result = subprocess.run(["sh", "-c", script], env={"PATH": os.defpath, "AWS_PROFILE": "x", "LC_ALL": "C.UTF-8"},
                            capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == AWKWARD + "|unset"


@pytest.mark.parametrize("fmt", sorted(PARSERS))
def test_renderers_round_trip_awkward_values(fmt: str) -> None:
    rendered = FORMATS[fmt]({"AWKWARD": AWKWARD, "PLAIN": "x"}, ["AWS_PROFILE"])
    if fmt == "dotenv":
        values = parse_docker_env_file(rendered)  # docker keeps quotes and spaces verbatim
    else:
        values, _ = PARSERS[fmt](rendered)
    assert values == {"AWKWARD": AWKWARD, "PLAIN": "x"}


def test_dotenv_renderer_refuses_a_line_break() -> None:
    with pytest.raises(ValueError, match="line break"):
        FORMATS["dotenv"]({"X": "a\nb"}, [])


def test_powershell_renderer_escapes_typographic_quotes() -> None:
    value = "/home/o\u2019brien/token"
    values, _ = parse_powershell_format(FORMATS["powershell"]({TOKEN_FILE_VAR: value}, []))
    assert values == {TOKEN_FILE_VAR: value}


# ---- 4. --token-file --------------------------------------------------------------------------

def test_env_token_file_is_private_exact_and_read_by_botocore(broker: Broker) -> None:
    broker.login("dev")
    path = broker.tmp / "client-token"
    path.write_text("stale\n")
    path.chmod(0o644)  # an earlier, looser file must not keep its mode
    env = clean_env(broker, **SHADOWING, AWS_CONTAINER_AUTHORIZATION_TOKEN="stale")
    script = 'out=$("$0" env dev --format sh --token-file client-token) || exit 99\neval "$out" || exit 98\nenv\n'
    result = subprocess.run(["sh", "-c", script, str(ROLEBROKER)], env=env, cwd=broker.tmp,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    after = parse_env_dump(result.stdout)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    raw = path.read_bytes()
    assert not raw.endswith((b"\n", b"\r")) and TOKEN_SHAPE.fullmatch(raw.decode()), raw
    assert after[TOKEN_FILE_VAR] == str(path)  # absolute, though given relative
    assert TOKEN_VAR not in after  # Java would prefer the variable over the file
    assert [p.name for p in broker.tmp.iterdir() if p.name.startswith(".client-token")] == []

    provider = botocore.credentials.ContainerProvider(environ={FULL_URI: after[FULL_URI], TOKEN_FILE_VAR: str(path)})
    credentials = provider.load()
    assert credentials is not None
    assert credentials.get_frozen_credentials().access_key == served(broker, "dev")["AccessKeyId"]


def test_env_token_file_output_unsets_the_token_variable(broker: Broker) -> None:
    broker.login("dev")  # env needs a session: without a terminal it would not ask
    path = broker.tmp / "t"
    values, unset = parse_json_format(rb_ok(broker, "env", "dev", "--format", "json", "--token-file", str(path)))
    assert TOKEN_VAR in unset and TOKEN_VAR not in values
    assert values[TOKEN_FILE_VAR] == str(path) and TOKEN_FILE_VAR not in unset


def test_env_token_file_in_a_missing_directory_fails_cleanly(broker: Broker) -> None:
    broker.login("dev")  # env needs a session: without a terminal it would not ask
    target = broker.tmp / "missing" / "token"
    result = subprocess.run([str(ROLEBROKER), "env", "dev", "--token-file", str(target)], env=base_env(broker),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert str(target.parent) in result.stderr
    assert result.stdout == ""


# ---- 5. credential-process --------------------------------------------------------------------

def test_credential_process_prints_version_1_json(broker: Broker) -> None:
    broker.login("dev")
    output = rb_ok(broker, "credential-process", "dev")
    document = json.loads(output)
    endpoint = served(broker, "dev")
    assert document == {"Version": 1, "AccessKeyId": endpoint["AccessKeyId"],
                        "SecretAccessKey": endpoint["SecretAccessKey"], "SessionToken": endpoint["Token"],
                        "Expiration": endpoint["Expiration"]}


def write_process_profile(broker: Broker, profile: str) -> Path:
    config = broker.tmp / "process-config"
    config.write_text(f"[profile {profile}-broker]\ncredential_process = {ROLEBROKER} credential-process {profile}\n"
                      "region = eu-west-1\n")
    return config


def test_botocore_process_provider_gets_the_dev_role(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    broker.login("dev")
    for name in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(write_process_profile(broker, "dev")))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("ROLEBROKER_RUNTIME_DIR", str(broker.daemon.settings.runtime_dir))

    credentials = botocore.session.Session(profile="dev-broker").get_credentials()

    assert credentials is not None and credentials.method == "custom-process"
    frozen = credentials.get_frozen_credentials()
    endpoint = served(broker, "dev")
    assert (frozen.access_key, frozen.secret_key, frozen.token) == (
        endpoint["AccessKeyId"], endpoint["SecretAccessKey"], endpoint["Token"])


def test_credential_process_before_login_hints_and_prints_nothing(broker: Broker) -> None:
    result = rb(broker, "credential-process", "dev")
    assert result.returncode != 0
    assert result.stdout == ""
    assert "rolebroker login dev" in result.stderr


def test_credential_process_without_daemon_prints_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["ROLEBROKER_RUNTIME_DIR"] = str(empty)
    result = subprocess.run([str(ROLEBROKER), "credential-process", "dev"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and result.stdout == ""
    assert "not running" in result.stderr and "Traceback" not in result.stderr


def test_20_parallel_credential_processes_make_one_assume_role(tmp_path: Path) -> None:
    broker = start_broker(tmp_path, OPEN_LAYOUT, users=[alice(with_mfa=False)])
    try:
        env = base_env(broker)
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            results = list(pool.map(lambda _: subprocess.run(
                [str(ROLEBROKER), "credential-process", "open"], env=env, capture_output=True, text=True,
                timeout=60), range(20)))
        failures = [(r.returncode, r.stderr) for r in results if r.returncode != 0]
        assert failures == []
        keys = {json.loads(r.stdout)["AccessKeyId"] for r in results}
        assert len(keys) == 1
        assert broker.sts.count("AssumeRole") == 1
        assert keys == {served(broker, "open")["AccessKeyId"]}
    finally:
        broker.stop()


def test_aws_cli_uses_credential_process(broker: Broker) -> None:
    broker.login("dev")
    env = clean_env(broker, AWS_CONFIG_FILE=str(write_process_profile(broker, "dev")),
                    AWS_SHARED_CREDENTIALS_FILE=os.devnull, AWS_ENDPOINT_URL_STS=broker.sts.endpoint_url)
    result = subprocess.run([str(AWS), "sts", "get-caller-identity", "--profile", "dev-broker", "--output", "json"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    identity = json.loads(result.stdout)
    assert identity["Arn"].startswith(DEV_ARN_PREFIX), identity
    callers = [c.caller_access_key_id for c in broker.sts.calls if c.action == "GetCallerIdentity" and c.status == 200]
    assert callers == [served(broker, "dev")["AccessKeyId"]]
