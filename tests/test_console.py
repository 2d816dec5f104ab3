"""`rolebroker console`: the real CLI against the in-process daemon, the strict STS double and
a local double of the console federation endpoint that checks the Session JSON it gets."""

from __future__ import annotations

import stat
import re
import html
import logging
import os
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from rolebroker.broker.console import destination, partition_of, signin_endpoint
from rolebroker.broker.errors import BrokerError
from tests.federation_double import FederationDouble
from tests.harness import CONFIG_LAYOUT, OPEN_ROLE, Broker, start_broker
from tests.processes import ROLEBROKER

LAYOUT = {"credentials": CONFIG_LAYOUT["credentials"],
          "config": CONFIG_LAYOUT["config"] + f"""
[profile open-direct]
role_arn = {OPEN_ROLE}
source_profile = alice
rolebroker_strategy = direct
region = eu-central-1
"""}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    running = start_broker(tmp_path, LAYOUT)
    yield running
    running.stop()


@pytest.fixture
def federation(broker: Broker) -> Iterator[FederationDouble]:
    double = FederationDouble(broker.sts).start()
    yield double
    double.stop()


def console(broker: Broker, federation: FederationDouble, *args: str,
            **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ROLEBROKER_", "BROWSER"))}
    env.update(ROLEBROKER_RUNTIME_DIR=str(broker.daemon.settings.runtime_dir), ROLEBROKER_SIGNIN_URL=federation.url)
    env.update(extra)
    result = subprocess.run([str(ROLEBROKER), "console", *args], env=env, capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, timeout=60)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def login_query(url: str) -> dict[str, str]:
    parsed = urllib.parse.urlsplit(url)
    return dict(urllib.parse.parse_qsl(parsed.query))


def test_a_session_token_profile_signs_in_with_its_role_credentials_for_at_most_an_hour(
        broker: Broker, federation: FederationDouble, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="rolebroker")
    broker.login("dev")
    status, _, served = broker.get_settled("dev")
    assert status == 200
    result = console(broker, federation, "dev", "--print")
    assert result.returncode == 0, result.stderr

    [call] = federation.calls
    assert (call.status, call.reason) == (200, "ok")
    # The Session JSON holds the role credentials being served for dev, not the MFA session's.
    assert call.session["sessionId"] == served["AccessKeyId"]
    assert call.credential is not None and call.credential.kind == "role" and call.credential.role_arn.endswith("/dev")
    assert call.session_duration is None  # role chaining: AWS allows no SessionDuration
    assert "at most 1 hour" in result.stderr

    url = result.stdout.strip()
    assert url.startswith(federation.url + "?")
    query = login_query(url)
    assert query == {"Action": "login", "Issuer": "rolebroker", "SigninToken": call.token,
                     "Destination": "https://console.aws.amazon.com/console/home?region=eu-west-1"}
    # The secret key went to the federation endpoint only: not in what the CLI printed, nor in
    # the daemon's log (nor the sign-in token, which the URL alone carries).
    assert served["SecretAccessKey"] not in result.stdout + result.stderr
    for secret in (served["SecretAccessKey"], served["Token"], call.token):
        assert secret not in caplog.text


def test_a_longer_console_session_is_refused_for_role_chaining_and_said_why(
        broker: Broker, federation: FederationDouble) -> None:
    broker.login("dev")
    result = console(broker, federation, "dev", "--print", "--duration", "8h")
    assert result.returncode == 1
    assert "at most 1 hour" in result.stderr and "rolebroker_strategy = direct" in result.stderr
    assert federation.calls == []


def test_a_direct_profile_asks_for_up_to_twelve_hours(broker: Broker, federation: FederationDouble) -> None:
    broker.login("open-direct")
    result = console(broker, federation, "open-direct", "--print", "--duration", "12h")
    assert result.returncode == 0, result.stderr
    [call] = federation.calls
    assert (call.status, call.session_duration) == (200, 43200)
    assert call.credential is not None and call.credential.from_long_term_keys
    query = login_query(result.stdout.strip())
    assert query["Destination"] == "https://console.aws.amazon.com/console/home?region=eu-central-1"
    assert query["SigninToken"] == call.token


def test_session_token_credentials_are_refused_before_any_call(broker: Broker, federation: FederationDouble) -> None:
    broker.login("alice")  # alice is served the MFA session's own (GetSessionToken) credentials
    result = console(broker, federation, "alice", "--print")
    assert result.returncode == 1
    assert "GetSessionToken" in result.stderr and "role profile" in result.stderr
    assert federation.calls == []


def test_not_logged_in_says_how(broker: Broker, federation: FederationDouble) -> None:
    result = console(broker, federation, "dev", "--print")
    assert result.returncode == 1
    assert "rolebroker login dev" in result.stderr
    assert federation.calls == []


def test_without_print_the_url_goes_to_the_browser(broker: Broker, federation: FederationDouble,
                                                   tmp_path: Path) -> None:
    broker.login("dev")
    opened = tmp_path / "opened-url"
    browser = tmp_path / "browser.py"
    browser.write_text("import sys, os\n"
                       "fd = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)\n"
                       "os.write(fd, sys.argv[1].encode())\n")
    result = console(broker, federation, "dev", BROWSER=f"{sys.executable} {browser} %s {opened}")
    assert result.returncode == 0, result.stderr
    [call] = federation.calls
    # The browser's command line (which every local user can read) holds a private page, not the URL.
    given = opened.read_text()
    assert given.startswith("file://") and "SigninToken" not in given
    page = Path(given[len("file://"):])
    assert stat.S_IMODE(page.stat().st_mode) == 0o600
    url = html.unescape(re.search(r'url=([^"]+)"', page.read_text()).group(1))  # type: ignore[union-attr]
    assert login_query(url)["SigninToken"] == call.token
    assert url not in result.stdout + result.stderr  # shown to the browser only


def test_a_federation_endpoint_that_refuses_is_reported_without_the_secret(
        broker: Broker, federation: FederationDouble) -> None:
    broker.login("dev")
    status, _, served = broker.get_settled("dev")
    federation.sts = type(broker.sts)([], [])  # a double that knows no credentials: it refuses them all
    result = console(broker, federation, "dev", "--print")
    assert result.returncode == 1
    assert "refused the sign-in (HTTP 400)" in result.stderr
    assert served["SecretAccessKey"] not in result.stderr and served["Token"] not in result.stderr


def test_partitions_have_their_own_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROLEBROKER_SIGNIN_URL", raising=False)
    assert partition_of("arn:aws-cn:iam::123456789012:role/x") == "aws-cn"
    assert signin_endpoint("aws-cn", None) == "https://signin.amazonaws.cn/federation"
    assert destination("aws-cn", None) == "https://console.amazonaws.cn/console/home?region=cn-north-1"
    assert signin_endpoint("aws-us-gov", None) == "https://signin.amazonaws-us-gov.com/federation"
    assert destination("aws-us-gov", "us-gov-east-1") == \
        "https://console.amazonaws-us-gov.com/console/home?region=us-gov-east-1"
    assert signin_endpoint("aws", None) == "https://signin.aws.amazon.com/federation"
    # A named endpoint gets the role's secret: AWS's sign-in hosts over https, or this machine.
    for bad in ("http://signin.aws.amazon.com/federation", "https://signin.example.com/federation",
                "https://signin.aws.amazon.com.example.com/federation", "https://evil.com/signin.aws.amazon.com",
                "ftp://127.0.0.1/x", "https://signin.aws.amazon.com/federation?a=b",
                "https://user@signin.aws.amazon.com/federation", "https://signin.aws.amazon.com:8443/federation"):
        with pytest.raises(BrokerError):
            signin_endpoint("aws", bad)
    for good in ("https://eu-west-1.signin.aws.amazon.com/federation", "https://signin.amazonaws.cn/federation",
                 "http://127.0.0.1:8080/federation", "http://[::1]:1/federation"):
        assert signin_endpoint("aws", good) == good
