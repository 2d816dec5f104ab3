"""The keyring at the edges, with no Secret Service needed: how the config is planned when
the keyring holds a profile's keys, and a keyring that never answers (an unlock prompt
nobody sees) does not stop the daemon. The keyring is replaced by a fake of the outside
world (a KeyStore), never by a mock of rolebroker's own code."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rolebroker.broker.clock import ManualClock
from rolebroker.broker.config import load_config
from rolebroker.broker.plans import KeyringKeys, RolePlan, SessionPlan, SessionSource, StaticSource
from rolebroker.broker.keyring_sessions import DaemonKeyring
from rolebroker.broker.keystore import write_index
from rolebroker.broker.models import Credentials, StaticKeys
from rolebroker.broker.refresh import RefreshPolicy
from rolebroker.broker.server import Daemon, DaemonSettings
from rolebroker.broker.sts_double import StsDouble
from tests.harness import ALICE_KEY, ALICE_SECRET, DEV_ROLE, MFA_SERIAL, Broker, alice, serve_in_thread, \
    standard_roles, write_config

NO_KEYS = {"credentials": "[alice]\nregion = us-east-1\n",
           "config": f"""
[profile alice]
mfa_serial = {MFA_SERIAL}
rolebroker_session_cache = keyring

[profile dev]
role_arn = {DEV_ROLE}
source_profile = alice

[profile plain]
role_arn = {DEV_ROLE}
source_profile = bob

[profile bob]
region = eu-west-1
"""}


def test_planning_takes_keys_from_the_keyring_only_where_the_files_have_none(tmp_path: Path) -> None:
    files = write_config(tmp_path, NO_KEYS, "http://127.0.0.1:9")
    without = load_config(files)
    assert "dev" in without.plans and not isinstance(without.plans["dev"].source, SessionSource)

    planned = load_config(files, frozenset({"alice", "bob", "not-in-the-files"}))
    dev = planned.plans["dev"]
    assert isinstance(dev, RolePlan) and isinstance(dev.source, SessionSource)
    assert dev.source.keys == KeyringKeys("alice") and dev.source.session_cache
    assert not any("keyring" in note for note in dev.notes)
    alice_plan = planned.plans["alice"]
    assert isinstance(alice_plan, SessionPlan) and alice_plan.source.keys == KeyringKeys("alice")
    plain = planned.plans["plain"]
    assert isinstance(plain, RolePlan) and plain.source == StaticSource("bob", KeyringKeys("bob"))
    assert "rolebroker:keyring" not in planned.raw_profiles["bob"]  # the files' view is left as botocore read it

    # Keys in the files too: theirs are used, and the profiles built on them say so.
    both = {"credentials": f"[alice]\naws_access_key_id = {ALICE_KEY}\naws_secret_access_key = {ALICE_SECRET}\n",
            "config": NO_KEYS["config"]}
    shadowed = load_config(write_config(tmp_path, both, "http://127.0.0.1:9"), frozenset({"alice"}))
    dev = shadowed.plans["dev"]
    assert isinstance(dev, RolePlan) and isinstance(dev.source, SessionSource)
    assert dev.source.keys == StaticKeys(ALICE_KEY, ALICE_SECRET)
    assert any("both in" in note and "the file's are used" in note for note in dev.notes)
    assert any("both in" in note for note in shadowed.plans["alice"].notes)


def test_an_unknown_session_cache_value_is_a_profile_error(tmp_path: Path) -> None:
    layout = {"credentials": f"[alice]\naws_access_key_id = {ALICE_KEY}\naws_secret_access_key = {ALICE_SECRET}\n",
              "config": NO_KEYS["config"].replace("= keyring", "= yes")}
    config = load_config(write_config(tmp_path, layout, "http://127.0.0.1:9"))
    assert "dev" not in config.plans
    assert "rolebroker_session_cache = 'yes'; use `keyring`" in config.errors["dev"]


class HungKeyring:
    """A keyring whose every call waits for a human who never comes (until released)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def _wait(self) -> None:
        self.calls += 1
        self.release.wait(30)

    def get_keys(self, profile: str) -> StaticKeys | None:
        self._wait()
        return None

    def set_keys(self, profile: str, keys: StaticKeys) -> None:
        self._wait()

    def delete_keys(self, profile: str) -> bool:
        self._wait()
        return False

    def get_session(self, name: str) -> Credentials | None:
        self._wait()
        return None

    def set_session(self, name: str, credentials: Credentials) -> None:
        self._wait()

    def delete_session(self, name: str) -> bool:
        self._wait()
        return False

    def describe(self) -> str:
        return "hung"


@pytest.fixture
def hung(tmp_path: Path) -> Iterator[tuple[Broker, HungKeyring]]:
    clock = ManualClock(start=(time.time() // 30 + 1) * 30)
    sts = StsDouble([alice()], standard_roles(), now=clock.now).start()
    files = write_config(tmp_path, NO_KEYS, sts.endpoint_url)
    settings = DaemonSettings(files=files, runtime_dir=tmp_path / "run", state_dir=tmp_path / "state", port=0)
    write_index(settings.state_dir, frozenset({"alice"}))
    store = HungKeyring()
    daemon = Daemon(settings, clock=clock, policy=RefreshPolicy(tick=30),
                    keyring=DaemonKeyring(store, timeout=0.5))
    loop, thread = serve_in_thread(daemon)
    broker = Broker(tmp_path, clock, sts, daemon, loop, thread, files)
    yield broker, store
    store.release.set()
    broker.stop()


def test_a_keyring_that_never_answers_is_an_error_and_the_daemon_keeps_serving(
        hung: tuple[Broker, HungKeyring]) -> None:
    broker, store = hung
    started = time.monotonic()
    status, _, body = broker.control_call("POST", "/v1/login", {"profile": "dev", "code": broker.next_code()})
    assert status == 403
    assert b"KeyringUnavailable" in body and b"no answer within 0.5 s" in body and b"unlock" in body
    assert time.monotonic() - started < 10
    # While that call is still stuck in the keyring, the daemon answers everything else.
    assert store.calls >= 1 and not store.release.is_set()
    assert broker.control().request("GET", "/v1/health")["status"] == "ok"
    status_rows = broker.control().request("GET", "/v1/status")["profiles"]
    assert {row["profile"] for row in status_rows} >= {"dev", "alice"}
    assert broker.sts.count("GetSessionToken") == 0  # nothing was sent without the keys
