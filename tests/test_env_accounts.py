"""`rolebroker env` never switches accounts: after `eval "$(rolebroker env dev)"`, the default
chain gets dev, and an explicit `--profile X` answers as X or fails saying why, never as dev.

The oracles are the real AWS CLI (the venv's, on botocore) and botocore's own resolution in a
separate process, against the strict STS double: GetCallerIdentity tells whose keys signed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from collections.abc import Iterator

import pytest

from rolebroker.broker.sts_world import IamUser
from tests.harness import ALICE_KEY, ALICE_SECRET, MFA_SERIAL, Broker, alice, start_broker

BIN = Path(sys.executable).parent
AWS = BIN / "aws"
DEV_ARN_PREFIX = "arn:aws:sts::222222222222:assumed-role/dev/"
PROD_ARN_PREFIX = "arn:aws:sts::333333333333:assumed-role/prod/"

NOMFA_KEY = "AKIANOMFA00000000001"
NOMFA_SECRET = "nomfa-secret-key-0000000000000000000000"
NOMFA_ARN = "arn:aws:iam::555555555555:user/nomfa"

# The layout most guides use: keys in [default], roles beside them, and a keys-only profile.
DEFAULT_KEYS = {
    "credentials": f"""
[default]
aws_access_key_id = {ALICE_KEY}
aws_secret_access_key = {ALICE_SECRET}

[nomfa]
aws_access_key_id = {NOMFA_KEY}
aws_secret_access_key = {NOMFA_SECRET}

[dev]
role_arn = arn:aws:iam::222222222222:role/dev
source_profile = default
mfa_serial = {MFA_SERIAL}

[prod]
role_arn = arn:aws:iam::333333333333:role/prod
source_profile = default
mfa_serial = {MFA_SERIAL}
""",
    "config": """
[default]
region = us-east-1

[profile dev]
region = eu-west-1

[profile nomfa]
region = ap-south-1

[profile dev-broker]
credential_process = rolebroker credential-process dev
region = eu-west-1
""",
}

# The layout the AWS CLI documents, with no [default] at all: nothing needs hiding.
NO_DEFAULT = {
    "credentials": f"""
[alice]
aws_access_key_id = {ALICE_KEY}
aws_secret_access_key = {ALICE_SECRET}

[nomfa]
aws_access_key_id = {NOMFA_KEY}
aws_secret_access_key = {NOMFA_SECRET}
""",
    "config": f"""
[profile alice]
mfa_serial = {MFA_SERIAL}

[profile dev]
role_arn = arn:aws:iam::222222222222:role/dev
source_profile = alice
region = eu-west-1

[profile prod]
role_arn = arn:aws:iam::333333333333:role/prod
source_profile = alice

[profile nomfa]
region = ap-south-1

[profile regiononly]
region = sa-east-1
""",
}

BOTOCORE_WHO = """
import json, sys
import botocore.session
profile = sys.argv[1] or None
try:
    session = botocore.session.Session(profile=profile)
    arn = session.create_client("sts").get_caller_identity()["Arn"]
    print(json.dumps({"ok": True, "arn": arn, "region": session.get_config_variable("region")}))
except Exception as exc:
    print(json.dumps({"ok": False, "error": type(exc).__name__, "message": str(exc)}))
"""


def _users() -> list[IamUser]:
    return [alice(), IamUser(NOMFA_KEY, NOMFA_SECRET, NOMFA_ARN, None)]


@pytest.fixture
def default_keys(tmp_path: Path) -> Iterator[Broker]:
    running = start_broker(tmp_path, DEFAULT_KEYS, users=_users())
    yield running
    running.stop()


@pytest.fixture
def no_default(tmp_path: Path) -> Iterator[Broker]:
    running = start_broker(tmp_path, NO_DEFAULT, users=_users())
    yield running
    running.stop()


def shell_env(broker: Broker, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ROLEBROKER_"))}
    env.update({
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
        "HOME": str(broker.tmp),
        "ROLEBROKER_RUNTIME_DIR": str(broker.daemon.settings.runtime_dir),
        "AWS_CONFIG_FILE": broker.files.config_file,
        "AWS_SHARED_CREDENTIALS_FILE": broker.files.credentials_file,
        # The test's STS double: every client and profile signs its requests to it.
        "AWS_ENDPOINT_URL_STS": broker.sts.endpoint_url,
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    env.update(extra)
    return env


def evaluated(broker: Broker, env: dict[str, str]) -> tuple[dict[str, str], str]:
    """The environment after `eval "$(rolebroker env dev)"` in a real sh, and env's stderr."""
    script = ('eval "$(rolebroker env dev 2>"$1")" || exit 90\n'
              '"$0" -c "import json, os; print(json.dumps(dict(os.environ)))"\n')
    stderr_file = broker.tmp / "env-stderr"
    result = subprocess.run(["sh", "-c", script, sys.executable, str(stderr_file)], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), stderr_file.read_text()


def aws(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(AWS), *args, "sts", "get-caller-identity", "--output", "json"], env=env,
                          capture_output=True, text=True, timeout=60)


def botocore_who(env: dict[str, str], profile: str = "") -> dict[str, Any]:
    result = subprocess.run([sys.executable, "-c", BOTOCORE_WHO, profile], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_default_keys_explicit_profiles_answer_as_themselves_or_fail_saying_why(default_keys: Broker) -> None:
    broker = default_keys
    broker.login("dev")
    after, notices = evaluated(broker, shell_env(broker, AWS_PROFILE="nomfa"))

    # The default chain: dev, and AWS_PROFILE (set before) is gone, with the reason on stderr.
    default = aws(after)
    assert default.returncode == 0, default.stderr
    assert json.loads(default.stdout)["Arn"].startswith(DEV_ARN_PREFIX)
    assert "AWS_PROFILE" not in after
    assert "unsetting AWS_PROFILE" in notices and "outrank" in notices
    # What was hidden, and why, was said.
    assert "[default] in your AWS files has credentials" in notices and "profile nomfa" in notices, notices

    # A keys-only profile: its keys are hidden, so it fails saying so, never answers as dev.
    nomfa = aws(after, "--profile", "nomfa")
    assert nomfa.returncode != 0 and "Arn" not in nomfa.stdout
    assert "profile nomfa is hidden here" in nomfa.stderr and "unset AWS_CONFIG_FILE" in nomfa.stderr, nomfa.stderr
    seen = botocore_who(after, "nomfa")
    assert not seen["ok"] and "profile nomfa is hidden here" in seen["message"], seen

    # A profile rolebroker serves answers as itself, through credential-process.
    prod = aws(after, "--profile", "prod")
    assert prod.returncode == 0, prod.stderr
    assert json.loads(prod.stdout)["Arn"].startswith(PROD_ARN_PREFIX)
    # The README's credential_process profile for IDEs works in that shell too.
    broker_profile = aws(after, "--profile", "dev-broker")
    assert broker_profile.returncode == 0, broker_profile.stderr
    assert json.loads(broker_profile.stdout)["Arn"].startswith(DEV_ARN_PREFIX)

    # The stand-in config holds no secret, and [default] there carries dev's region.
    stand_in = Path(after["AWS_CONFIG_FILE"])
    assert stand_in.parent.parent == broker.daemon.settings.runtime_dir
    assert stand_in.stat().st_mode & 0o777 == 0o600
    text = stand_in.read_text()
    assert ALICE_KEY not in text and NOMFA_KEY not in text and ALICE_SECRET not in text
    assert after["AWS_SHARED_CREDENTIALS_FILE"] == os.devnull
    assert botocore_who(after)["region"] == "eu-west-1"
    assert botocore_who(after, "nomfa")["ok"] is False
    # Alice's long-term keys signed nothing; nomfa's neither.
    callers = [c.caller_access_key_id for c in broker.sts.calls if c.action == "GetCallerIdentity"]
    assert ALICE_KEY not in callers and NOMFA_KEY not in callers


# DEFAULT_KEYS with the client settings people keep in their profiles: output formats, the
# pager, retries, S3 addressing and local endpoints (LocalStack, say). The harness gives every
# profile `services = test-sts`, whose section points STS at the double: carried over too.
SETTINGS_CONFIG = """
[default]
region = us-east-1
output = table
cli_pager =
retry_mode = standard
max_attempts = 7

[profile dev]
region = eu-west-1
output = text
endpoint_url = http://127.0.0.1:4567
s3 =
  addressing_style = path

[profile nomfa]
region = ap-south-1
endpoint_url = http://127.0.0.1:4566
cli_timestamp_format = iso8601
"""
CARRIED = ("output", "cli_pager", "retry_mode", "max_attempts", "services", "s3", "endpoint_url",
           "cli_timestamp_format")

BOTOCORE_SETTINGS = """
import json, os, sys
import botocore, botocore.config, botocore.session
unsigned = botocore.config.Config(signature_version=botocore.UNSIGNED)  # endpoints only: no credentials
found = {}
for profile in ("default", "dev", "nomfa"):
    session = botocore.session.Session(profile=profile)
    scoped = session.get_scoped_config()
    s3 = session.create_client("s3", region_name="eu-west-1", config=unsigned)
    sts = session.create_client("sts", region_name="eu-west-1", config=unsigned)
    found[profile] = {"scoped": {key: scoped.get(key) for key in sys.argv[1:]}, "s3": s3.meta.endpoint_url,
                      "sts": sts.meta.endpoint_url, "retries": s3.meta.config.retries}
print(json.dumps(found))
"""


def botocore_settings(env: dict[str, str]) -> dict[str, Any]:
    quiet = {k: v for k, v in env.items() if k != "AWS_ENDPOINT_URL_STS"}
    result = subprocess.run([sys.executable, "-c", BOTOCORE_SETTINGS, *CARRIED], env=quiet,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_the_stand_in_config_keeps_every_profiles_client_settings(tmp_path: Path) -> None:
    broker = start_broker(tmp_path, {**DEFAULT_KEYS, "config": SETTINGS_CONFIG}, users=_users())
    try:
        broker.login("dev")
        before = shell_env(broker)
        after, _ = evaluated(broker, before)
        assert after["AWS_CONFIG_FILE"] != before["AWS_CONFIG_FILE"]  # the stand-in, files hidden
        # botocore is the oracle: with the user's files and with the stand-in, each profile has
        # the same settings and its S3 client the same endpoint and retries.
        original, stand_in = botocore_settings(before), botocore_settings(after)
        for profile in ("dev", "nomfa"):
            assert stand_in[profile] == original[profile], profile
        # [default] is the broker's: its region is dev's; every other setting is [default]'s own.
        assert stand_in["default"]["scoped"] == original["default"]["scoped"]
        assert stand_in["default"]["retries"] == original["default"]["retries"]
        assert stand_in["default"]["sts"] == original["default"]["sts"] == broker.sts.endpoint_url
        assert original["dev"]["s3"] == "http://127.0.0.1:4567" and original["nomfa"]["s3"] == "http://127.0.0.1:4566"
        assert original["default"]["scoped"]["cli_pager"] == "" and original["dev"]["scoped"]["s3"] == {
            "addressing_style": "path"}
        text = Path(after["AWS_CONFIG_FILE"]).read_text()
        for secret in (ALICE_KEY, ALICE_SECRET, NOMFA_KEY, NOMFA_SECRET, MFA_SERIAL):
            assert secret not in text
    finally:
        broker.stop()


def test_a_services_section_the_stand_in_cannot_carry_is_dropped_saying_so(tmp_path: Path) -> None:
    broker = start_broker(tmp_path, {**DEFAULT_KEYS, "config": SETTINGS_CONFIG}, users=_users())
    try:
        config = Path(broker.files.config_file)
        text = config.read_text().replace("[profile nomfa]\nservices = test-sts\n",
                                          "[profile nomfa]\nservices = local/stack\n")
        text = text.replace("[profile prod]\nservices = test-sts\n", "[profile prod]\nservices = flat\n")
        config.write_text(text + "\n[services local/stack]\ns3 =\n  endpoint_url = http://127.0.0.1:4568\n"
                          # Nothing a services section can carry: its entries are per service.
                          "\n[services flat]\nendpoint_url = http://127.0.0.1:4569\n")
        broker.control().request("POST", "/v1/reload")
        broker.login("dev")
        before = shell_env(broker)
        assert botocore_settings(before)["nomfa"]["s3"] == "http://127.0.0.1:4568"  # botocore reads the name
        after, notices = evaluated(broker, before)
        assert "'local/stack' is not in the stand-in config" in notices, notices
        assert "'flat' is not in the stand-in config" in notices, notices
        stand_in = Path(after["AWS_CONFIG_FILE"]).read_text()
        assert "flat" not in stand_in and "local/stack" not in stand_in
        # In the env shell nomfa falls back to its profile-wide endpoint_url rather than failing
        # on every call (botocore refuses a `services` name with no section).
        assert botocore_settings(after)["nomfa"]["s3"] == "http://127.0.0.1:4566"
    finally:
        broker.stop()


def test_without_a_default_profile_nothing_is_hidden_and_nomfa_answers_as_nomfa(no_default: Broker) -> None:
    broker = no_default
    broker.login("dev")
    after, notices = evaluated(broker, shell_env(broker))

    assert after["AWS_CONFIG_FILE"] == broker.files.config_file
    assert after["AWS_SHARED_CREDENTIALS_FILE"] == broker.files.credentials_file
    default = aws(after)
    assert default.returncode == 0, default.stderr
    assert json.loads(default.stdout)["Arn"].startswith(DEV_ARN_PREFIX)

    nomfa = aws(after, "--profile", "nomfa")
    assert nomfa.returncode == 0, nomfa.stderr
    assert json.loads(nomfa.stdout)["Arn"] == NOMFA_ARN
    seen = botocore_who(after, "nomfa")
    assert seen["ok"] and seen["arn"] == NOMFA_ARN, seen
    assert NOMFA_KEY in [c.caller_access_key_id for c in broker.sts.calls if c.action == "GetCallerIdentity"]

    # dev's region had to be exported (there is no [default] region): said on stderr, with the
    # way out, since it applies to every profile in that shell.
    assert after["AWS_REGION"] == "eu-west-1"
    assert "AWS_REGION=eu-west-1" in notices and "--region" in notices
    # A profile with nothing of its own would fall through to the broker: said, not quiet.
    assert "regiononly" in notices and "no credentials of their own" in notices, notices
    assert "nomfa" not in notices.split("no credentials")[0].rsplit("note:", 1)[-1]  # nomfa has keys


def test_the_default_region_is_not_exported_when_it_already_is_the_profiles(tmp_path: Path) -> None:
    layout = {"credentials": NO_DEFAULT["credentials"],
              "config": NO_DEFAULT["config"] + "\n[default]\nregion = eu-west-1\n"}
    broker = start_broker(tmp_path, layout, users=_users())
    try:
        after, notices = evaluated(broker, shell_env(broker))
        assert "AWS_REGION" not in after and "AWS_DEFAULT_REGION" not in after
        assert "AWS_REGION" not in notices
        seen = botocore_who(after, "nomfa")
        assert seen["region"] == "ap-south-1", seen  # nomfa's own region, not dev's
    finally:
        broker.stop()


AWS_CLI_V2 = Path("/usr/bin/aws")  # Debian's awscli package


def test_the_aws_cli_v2_resolves_profiles_the_same_way(default_keys: Broker) -> None:
    if not AWS_CLI_V2.exists():
        pytest.skip("/usr/bin/aws is missing (apt-get install awscli; CI does)")
    broker = default_keys
    broker.login("dev")
    after, _ = evaluated(broker, shell_env(broker))
    # 2.9 ignores AWS_ENDPOINT_URL_STS: the double's endpoint goes on the command line.
    endpoint = ["--endpoint-url", broker.sts.endpoint_url]

    def v2(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(AWS_CLI_V2), *args, "sts", "get-caller-identity", "--output", "json", *endpoint],
                              env=after, capture_output=True, text=True, timeout=60)

    default = v2()
    assert default.returncode == 0, default.stderr
    assert json.loads(default.stdout)["Arn"].startswith(DEV_ARN_PREFIX)
    nomfa = v2("--profile", "nomfa")
    assert nomfa.returncode != 0 and "profile nomfa is hidden here" in nomfa.stderr, nomfa.stderr
    prod = v2("--profile", "prod")
    assert prod.returncode == 0, prod.stderr
    assert json.loads(prod.stdout)["Arn"].startswith(PROD_ARN_PREFIX)


def test_the_stand_in_config_takes_nothing_unchecked_from_the_daemon(tmp_path: Path) -> None:
    from rolebroker.clients.envvars import UntrustedAnswer, environment_for

    described = {"profile": "dev", "endpoint_url": "http://127.0.0.1:9911/v1/credentials/dev",
                 "region": "eu-west-1", "default_profile_has_credentials": True,
                 "other_profiles": [
                     {"name": "x]\n[default]\naws_access_key_id = AKIAEVIL", "served": True},
                     {"name": "ok", "served": False, "broker_process": "dev\ncredential_process = evil"},
                     {"name": "prod", "served": True, "region": "eu-central-1"},
                 ]}
    environment = environment_for(described, "rbt_" + "a" * 43, stand_in_config=str(tmp_path / "c"))
    text = environment.config_text or ""
    # A setting off the list (a newer daemon's, or a credential) is never written.
    unlisted = environment_for({**described, "other_profiles": [
        {"name": "p", "settings": {"aws_secret_access_key": "SECRETVALUE", "output": "json"}}]},
        "rbt_" + "a" * 43, stand_in_config=str(tmp_path / "c")).config_text or ""
    assert "SECRETVALUE" not in unlisted and "output = json" in unlisted
    # A services name whose section the daemon did not send is not written (an older daemon's
    # answer): botocore would fail every call of that profile.
    ghost = environment_for({**described, "other_profiles": [{"name": "p", "settings": {"services": "ghost"}}]},
                            "rbt_" + "a" * 43, stand_in_config=str(tmp_path / "c")).config_text or ""
    assert "ghost" not in ghost
    assert "AKIAEVIL" not in text and "evil" not in text and "x]" not in text
    assert "[profile ok]\ncredential_process = /bin/sh -c" in text  # asks for nothing: fails saying why
    assert "[profile prod]\ncredential_process = rolebroker credential-process prod\nregion = eu-central-1" in text
    for bad in ({"name": "p", "region": "eu-west-1\nx = y"}, {"name": 7}, "not a dict",
                {"name": "p", "settings": {"output": "json\n[default]\ncredential_process = evil"}},
                {"name": "p", "settings": {"s3": {"addressing_style": "path\ncredential_process = evil"}}},
                {"name": "p", "settings": {"s3": "path"}}):
        with pytest.raises(UntrustedAnswer):
            environment_for({**described, "other_profiles": [bad]}, "rbt_" + "a" * 43,
                            stand_in_config=str(tmp_path / "c"))
    for sections in ({"x]\n[default": {}}, {"ok": {"s3\nevil": {"endpoint_url": "http://x"}}},
                     {"ok": {"s3": {"endpoint_url": "http://x\ncredential_process = evil"}}}):
        with pytest.raises(UntrustedAnswer):
            environment_for({**described, "services_sections": sections}, "rbt_" + "a" * 43,
                            stand_in_config=str(tmp_path / "c"))
