"""Long-term keys in the OS keyring (`rolebroker keys`) and the opt-in MFA session cache,
against a real Secret Service: GNOME Keyring on a private D-Bus session bus, unlocked with
a test password, reached through `keyring` by the real CLI and the real daemon."""

from __future__ import annotations

import gc
import json
import logging
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from rolebroker.broker.plans import MfaSessionKey
from rolebroker.broker.keyring_sessions import cache_name
from rolebroker.broker.keystore import OsKeyring
from rolebroker.broker.sts_world import IamUser
from tests import secret_service
from tests.harness import (
    ALICE_KEY, ALICE_SECRET, DEV_ROLE, MFA_SERIAL, OPEN_ROLE, Broker, alice, standard_roles, start_broker,
)
from tests.processes import ROLEBROKER, Serve

BOB_KEY = "AKIABOB0000000000001"
BOB_SECRET = "bob-secret-key-00000000000000000000000000"
BOB = IamUser(BOB_KEY, BOB_SECRET, "arn:aws:iam::111111111111:user/bob", None)

CREDENTIALS = f"""# My AWS keys. alice has an MFA device; bob does not.
[alice]
aws_access_key_id = {ALICE_KEY}
; a comment between the keys stays
aws_secret_access_key = {ALICE_SECRET}
region = us-east-1

[bob]
# bob's keys, written by hand
AWS_ACCESS_KEY_ID={BOB_KEY}
aws_secret_access_key : {BOB_SECRET}
"""

CONFIG = f"""[profile alice]
mfa_serial = {MFA_SERIAL}
{{cache}}
[profile dev]
role_arn = {DEV_ROLE}
source_profile = alice
region = eu-west-1

[profile open]
role_arn = {OPEN_ROLE}
source_profile = bob
"""


def layout(cache: bool = False, credentials: str = CREDENTIALS) -> dict[str, str]:
    return {"credentials": credentials,
            "config": CONFIG.format(cache="rolebroker_session_cache = keyring\n" if cache else "")}


@pytest.fixture(scope="module")
def service() -> Iterator[secret_service.SecretService]:
    reason = secret_service.missing()
    if reason is not None:
        pytest.skip(reason)
    running = secret_service.start()
    yield running
    running.stop()


@pytest.fixture
def keyring_env(service: secret_service.SecretService, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The in-process daemon (and this test) reach the test Secret Service, not the user's."""
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", service.env["DBUS_SESSION_BUS_ADDRESS"])
    yield service.env
    store = OsKeyring()  # leave the keyring as this test found it
    for profile in ("alice", "bob"):
        store.delete_keys(profile)
    store.delete_session(cache_name(MfaSessionKey("alice", MFA_SERIAL)))


@pytest.fixture
def running(tmp_path: Path, keyring_env: dict[str, str], request: pytest.FixtureRequest) -> Iterator[Broker]:
    options = getattr(request, "param", {})
    broker = start_broker(tmp_path, layout(**options), users=[alice(), BOB], roles=standard_roles())
    broker.sts.check_signatures = True  # the secret that signed is checked, not only the key id
    yield broker
    broker.stop()


def cli_env(broker: Broker, keyring: dict[str, str] | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "ROLEBROKER_", "DBUS_", "XDG_"))}
    env.update(keyring or {})
    env.update(ROLEBROKER_RUNTIME_DIR=str(broker.daemon.settings.runtime_dir),
               ROLEBROKER_STATE_DIR=str(broker.daemon.settings.state_dir),
               AWS_CONFIG_FILE=broker.files.config_file, AWS_SHARED_CREDENTIALS_FILE=broker.files.credentials_file)
    env.update(extra)
    return env


def rb(env: dict[str, str], *args: str, input: str = "") -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(ROLEBROKER), *args], env=env, input=input, capture_output=True, text=True,
                            timeout=60)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def files_holding(secret: str, *roots: Path) -> list[Path]:
    found = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink() and secret.encode() in path.read_bytes():
                found.append(path)
    return found


def without(text: str, *lines: str) -> str:
    kept = text.splitlines(keepends=True)
    for line in lines:
        kept.remove(line + "\n")
    return "".join(kept)


# ---- keys import: out of the file, into the keyring; everything works as before --------------

def test_import_moves_keys_out_of_the_file_and_login_refresh_exec_work(
        running: Broker, keyring_env: dict[str, str], service: secret_service.SecretService,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="rolebroker")
    env = cli_env(running, keyring_env)
    credentials = Path(running.files.credentials_file)
    credentials.chmod(0o640)
    original = credentials.read_text()
    running.login("dev")  # a session bought with the file's keys, before the move
    status, _, served = running.get_settled("dev")
    assert status == 200

    for profile in ("alice", "bob"):
        result = rb(env, "keys", "import", profile)
        assert result.returncode == 0, result.stderr
        assert "****0001" in result.stdout
    # Every other line and comment, byte for byte; the file's mode too.
    assert credentials.read_text() == without(
        original, f"aws_access_key_id = {ALICE_KEY}", f"aws_secret_access_key = {ALICE_SECRET}",
        f"AWS_ACCESS_KEY_ID={BOB_KEY}", f"aws_secret_access_key : {BOB_SECRET}")
    assert credentials.stat().st_mode & 0o777 == 0o640
    # The secrets are in the keyring, and in no file of the project or the AWS config; the
    # keyring's own files hold them encrypted.
    store = OsKeyring()
    assert store.get_keys("alice") is not None and store.get_keys("alice").secret_access_key == ALICE_SECRET
    assert store.get_keys("bob") is not None and store.get_keys("bob").secret_access_key == BOB_SECRET
    for secret in (ALICE_SECRET, BOB_SECRET):
        assert files_holding(secret, running.tmp, service.home) == []
    assert service.files(), "the keyring daemon keeps its (encrypted) keyring in a file"

    # The CLI told the daemon to reload; the MFA session bought before the move serves on.
    sessions_before = running.sts.count("GetSessionToken")
    running.advance(3600)
    status, _, renewed = running.get_settled("dev")
    assert status == 200 and renewed["AccessKeyId"] != served["AccessKeyId"]
    assert running.sts.count("GetSessionToken") == sessions_before
    # A new login signs GetSessionToken with the keyring's keys (the double checks the signature).
    before = running.sts.count("GetSessionToken")
    running.login("dev")
    assert running.sts.count("GetSessionToken", ok=True) == before + 1
    assert [c.caller_access_key_id for c in running.sts.calls if c.action == "GetSessionToken"][-1] == ALICE_KEY
    status, _, body = running.get_settled("dev")
    assert status == 200
    # bob's role is signed by his keys from the keyring at every refresh.
    status, _, first = running.get_settled("open")
    assert status == 200
    running.advance(3600)
    status, _, renewed = running.get_settled("open")
    assert status == 200 and renewed["AccessKeyId"] != first["AccessKeyId"]
    assert [c.caller_access_key_id for c in running.sts.calls if c.action == "AssumeRole"].count(BOB_KEY) >= 2
    # No session cache was asked for: nothing of the MFA session is in the keyring.
    assert store.get_session(cache_name(MfaSessionKey("alice", MFA_SERIAL))) is None

    child = "import boto3; print(boto3.client('sts').get_caller_identity()['Arn'])"
    result = rb({**env, "AWS_ENDPOINT_URL_STS": running.sts.endpoint_url}, "exec", "dev", "--",
                sys.executable, "-c", child)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("arn:aws:sts::222222222222:assumed-role/dev/")

    status_out = rb(env, "status")
    assert "keyring" not in status_out.stdout  # keys in one place only: nothing to say
    listed = rb(env, "keys", "list")
    assert listed.returncode == 0, listed.stderr
    assert "alice" in listed.stdout and "****0001" in listed.stdout and "keyring" in listed.stdout
    for secret in (ALICE_SECRET, BOB_SECRET):
        assert secret not in listed.stdout + listed.stderr + status_out.stdout
        assert secret not in caplog.text


def test_a_source_profile_without_keys_in_the_files_uses_the_keyrings(
        tmp_path: Path, keyring_env: dict[str, str]) -> None:
    credentials = "# alice's keys live in the keyring\n[alice]\nregion = us-east-1\n"
    broker = start_broker(tmp_path, layout(credentials=credentials), users=[alice(), BOB])
    broker.sts.check_signatures = True
    try:
        env = cli_env(broker, keyring_env)
        status, _, body = broker.raw_get("dev", broker.token("dev"))
        assert status == 403 and "alice" in body["message"]  # no keys anywhere yet

        # The secret is typed at the prompt (here: piped), never given on the command line.
        assert rb(env, "keys", "add", "alice", ALICE_SECRET).returncode == 2
        # A wrong secret is what STS sees: the keyring's keys are the ones that sign.
        assert rb(env, "keys", "add", "alice", input=f"{ALICE_KEY}\nnot-alices-secret-0000000000000\n").returncode == 0
        wrong = broker.control_call("POST", "/v1/login", {"profile": "dev", "code": broker.next_code()})
        assert wrong[0] == 403 and b"does not accept the keys" in wrong[2]
        assert broker.sts.calls[-1].error_code == "SignatureDoesNotMatch"
        added = rb(env, "keys", "add", "alice", input=f"{ALICE_KEY}\n{ALICE_SECRET}\n")
        assert added.returncode == 0, added.stderr
        assert ALICE_SECRET not in added.stdout + added.stderr
        assert Path(broker.files.credentials_file).read_text() == credentials

        broker.login("dev")
        status, _, _ = broker.get_settled("dev")
        assert status == 200
        assert [c.caller_access_key_id for c in broker.sts.calls if c.action == "GetSessionToken"][-1] == ALICE_KEY

        removed = rb(env, "keys", "remove", "alice")
        assert removed.returncode == 0, removed.stderr
        assert OsKeyring().get_keys("alice") is None
        assert rb(env, "keys", "remove", "alice").returncode == 1  # nothing left to remove
    finally:
        broker.stop()


def test_keys_in_both_places_the_file_wins_and_status_says_so(
        running: Broker, keyring_env: dict[str, str]) -> None:
    env = cli_env(running, keyring_env)
    # Keys the STS double does not know: if they were used, the login would fail.
    added = rb(env, "keys", "add", "alice", input="AKIAUNKNOWN000000009\nnot-the-real-secret-000000000000\n")
    assert added.returncode == 0, added.stderr
    assert "also holds keys" in added.stderr

    status = rb(env, "status")
    assert "are both in" in status.stdout and "the file's are used" in status.stdout
    assert "keys import alice" in status.stdout
    running.login("dev")
    assert running.get_settled("dev")[0] == 200
    assert [c.caller_access_key_id for c in running.sts.calls if c.action == "GetSessionToken"][-1] == ALICE_KEY

    listed = rb(env, "keys", "list")
    row = next(line for line in listed.stdout.splitlines() if line.startswith("alice"))
    assert "****0001" in row and "(the file's are used)" in row and "keyring holds ****0009" in row
    assert "not-the-real-secret" not in listed.stdout


# ---- no usable keyring: a clear error, and the file as it was -----------------------------------

def test_without_a_keyring_import_says_what_to_do_and_changes_nothing(tmp_path: Path) -> None:
    broker = start_broker(tmp_path, layout(), users=[alice(), BOB])
    try:
        headless = {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "home" / "config"),
                    "DBUS_SESSION_BUS_ADDRESS": f"unix:path={tmp_path / 'no-bus'}"}
        env = cli_env(broker, headless)
        credentials = Path(broker.files.credentials_file)
        before = credentials.read_bytes()
        for args, stdin in ((("keys", "import", "alice"), ""), (("keys", "add", "alice"), f"{ALICE_KEY}\nx\n")):
            result = rb(env, *args, input=stdin)
            assert result.returncode == 1
            assert "gnome-keyring" in result.stderr and "Secret Service" in result.stderr
            assert ALICE_SECRET not in result.stderr + result.stdout
        assert credentials.read_bytes() == before
        assert not (broker.daemon.settings.state_dir / "keyring-profiles.json").exists()
        # Nothing changed for the daemon either: the file's keys still log in.
        broker.login("dev")
        assert broker.get_settled("dev")[0] == 200
    finally:
        broker.stop()


# ---- the opt-in MFA session cache ----------------------------------------------------------

@pytest.mark.parametrize("running", [{"cache": True}], indirect=True)
def test_session_cache_survives_a_daemon_restart_and_logout_removes_it(
        running: Broker, keyring_env: dict[str, str], started: list[Serve]) -> None:
    running.login("dev")
    assert running.get_settled("dev")[0] == 200
    name = cache_name(MfaSessionKey("alice", MFA_SERIAL))
    cached = OsKeyring().get_session(name)
    assert cached is not None
    session = next(c for c in running.sts.issued() if c.kind == "session")
    assert cached.access_key_id == session.access_key_id
    # Written only to the keyring: no file of the daemon's holds the session's secret.
    assert files_holding(session.secret_access_key, running.tmp) == []
    assert files_holding(session.session_token, running.tmp) == []

    # A restart: this daemon stops, a real `rolebroker serve` process takes over the same state.
    running.daemon.stop()
    running.thread.join(10)
    env = cli_env(running, keyring_env)
    daemon = Serve([str(ROLEBROKER), "serve", "--port", "0"], env)
    started.append(daemon)
    daemon.log.wait_for("serving")
    sessions_before = running.sts.count("GetSessionToken")
    result = rb(env, "credential-process", "dev")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["AccessKeyId"].startswith("ASIA")
    assert running.sts.count("GetSessionToken") == sessions_before  # no new code, no new session
    assert [c.caller_access_key_id for c in running.sts.calls if c.action == "AssumeRole"][-1] == \
        session.access_key_id
    status = json.loads(rb(env, "status", "--json").stdout)
    dev = next(row for row in status["profiles"] if row["profile"] == "dev")
    assert not dev["login_required"]

    logout = rb(env, "logout", "dev")
    assert logout.returncode == 0, logout.stderr
    assert OsKeyring().get_session(name) is None
    again = rb(env, "credential-process", "dev")
    assert again.returncode == 1  # a login is needed again ...
    # ... and the restored session's end is named like any other's.
    assert "MFA session logged out at" in again.stderr, again.stderr
    daemon.signal(15)
    assert daemon.wait() == 0


def test_logout_says_so_when_the_keyring_cannot_forget_the_session(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if secret_service.missing() is not None:
        pytest.skip(secret_service.missing())
    own = secret_service.start()  # this test stops its keyring daemon: not the shared one
    try:
        monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", own.env["DBUS_SESSION_BUS_ADDRESS"])
        broker = start_broker(tmp_path, layout(cache=True), users=[alice(), BOB], roles=standard_roles())
        try:
            broker.login("dev")
            token = broker.token("dev")
            # The Secret Service goes away (a crashed keyring daemon, a desktop session ending).
            keyring_daemon = own.processes[1]
            keyring_daemon.terminate()
            keyring_daemon.wait(10)

            env = cli_env(broker, own.env)
            logout = rb(env, "logout", "dev")
            assert logout.returncode == 1  # not the success it would be without the keyring's copy
            assert logout.stdout.startswith("Wiped from memory:") and "dev" in logout.stdout
            assert "may still be in the OS keyring" in logout.stderr and "secret-tool clear service rolebroker" \
                in logout.stderr, logout.stderr
            session = next(c for c in broker.sts.issued() if c.kind == "session")
            assert session.session_token not in logout.stderr and session.secret_access_key not in logout.stderr
            # Memory is wiped all the same, and the daemon serves on.
            assert broker.raw_get("dev", token)[0] == 403
            assert broker.control().request("GET", "/v1/health")["status"] == "ok"
        finally:
            broker.stop()
    finally:
        own.stop()
        # keyring's Secret Service backend leaves its D-Bus connection to the garbage collector,
        # which would report it during a later test: collect it here, where it is expected.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()


def test_keys_add_prompts_on_a_terminal_without_echoing_the_secret(
        running: Broker, keyring_env: dict[str, str]) -> None:
    import pty
    import select
    import time

    env = cli_env(running, keyring_env)
    # rolebroker on a terminal (a pseudo-terminal), as a user runs it; a session of its own,
    # so it reads the terminal it was given, never the one running the tests.
    terminal, child_end = pty.openpty()
    child = subprocess.Popen([str(ROLEBROKER), "keys", "add", "carol"], env=env, stdin=child_end,
                             stdout=child_end, stderr=child_end, start_new_session=True)
    os.close(child_end)
    seen = b""

    def until(text: bytes, timeout: float = 30.0) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while text not in seen:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {text!r} on the terminal; got {seen!r}"
            if select.select([terminal], [], [], remaining)[0]:
                try:
                    chunk = os.read(terminal, 4096)
                except OSError:  # the child closed the terminal
                    chunk = b""
                assert chunk, f"the terminal closed before {text!r}; got {seen!r}"
                seen += chunk

    try:
        until(b"AWS access key ID: ")
        os.write(terminal, b"AKIACAROL00000000001\n")
        until(b"AWS secret access key: ")
        os.write(terminal, b"carols-secret-00000000000000000000000\n")
        until(b"Stored the keys of carol (****0001)")
    finally:
        status = child.wait(30)
        os.close(terminal)
    assert status == 0
    assert b"carols-secret" not in seen  # typed, never echoed
    keys = OsKeyring().get_keys("carol")
    assert keys is not None and keys.secret_access_key == "carols-secret-00000000000000000000000"
    OsKeyring().delete_keys("carol")
