"""The issue's "done means": boto3, the AWS CLI and the AWS SDK for JavaScript v3 all get the
role's credentials through `eval "$(rolebroker env dev)"`, and STS saw exactly one MFA code
for dev and prod together.

Every client here is a real, separate process resolving its SDK's *default* credential chain
from the environment alone, as a user's program would. (boto3 is covered by
`Broker.caller_arn`, used in test_login.py and below.)
"""

from __future__ import annotations

import calendar
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.harness import ALICE_KEY, DEV_ROLE, PROD_ROLE, Broker

BIN = Path(sys.executable).parent  # the venv's console scripts: aws, rolebroker
AWS = BIN / "aws"
ROLEBROKER = BIN / "rolebroker"
JS_DIR = Path(__file__).parent / "js"

DEV_ARN_PREFIX = "arn:aws:sts::222222222222:assumed-role/dev/"
PROD_ARN_PREFIX = "arn:aws:sts::333333333333:assumed-role/prod/"

# The regular expression @smithy/core's parseRfc3339DateTime applies to `Expiration`
# (dist-es/submodules/serde/date-utils.js, @smithy/core 3.41.1, used by
# @aws-sdk/credential-provider-http's getCredentials). Kept verbatim; compiled with re.ASCII
# because JavaScript's \d is ASCII-only, and used with fullmatch because JavaScript's `$`
# (without the m flag) does not match before a trailing newline as Python's does.
JS_RFC3339 = r"^(\d{4})-(\d{2})-(\d{2})[tT](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?[zZ]$"
# getCredentials's shape check: `typeof parsed.X !== "string"` for these four.
JS_REQUIRED_FIELDS = ("AccessKeyId", "SecretAccessKey", "Token", "Expiration")
# credential-provider-node's credentialsTreatedAsExpired: refetch when under 5 minutes remain.
JS_REFRESH_WINDOW = 300

# Variables that would shadow the container provider (docs/SDK-COMPATIBILITY.md), set to values
# that would make STS fail loudly or send the SDK elsewhere if `rolebroker env` left them.
SHADOWING = {
    "AWS_PROFILE": "default",
    "AWS_DEFAULT_PROFILE": "default",
    "AWS_ACCESS_KEY_ID": "AKIAJUNKJUNKJUNKJUNK",
    "AWS_SECRET_ACCESS_KEY": "junk-secret",
    "AWS_SESSION_TOKEN": "junk-token",
    "AWS_SECURITY_TOKEN": "junk-token",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/junk",  # RELATIVE would win over FULL in botocore and JS
}


def _run(command: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command[0]} exited {result.returncode}:\n{result.stderr}"
    return result


def _aws_caller_identity(env: dict[str, str]) -> dict[str, Any]:
    result = _run([str(AWS), "sts", "get-caller-identity", "--output", "json"], env)
    identity: dict[str, Any] = json.loads(result.stdout)
    return identity


def _identity_callers(broker: Broker) -> list[str]:
    """Access key ids that signed each successful GetCallerIdentity the STS double answered."""
    return [c.caller_access_key_id for c in broker.sts.calls if c.action == "GetCallerIdentity" and c.status == 200]


def _served_key(broker: Broker, profile: str) -> str:
    status, _, body = broker.raw_get(profile, broker.token(profile))
    assert status == 200, body
    key: str = body["AccessKeyId"]
    return key


def _node_or_skip() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (CI installs nodejs and npm)")
    if not (JS_DIR / "node_modules" / "@aws-sdk" / "client-sts").is_dir():
        pytest.skip("tests/js/node_modules is missing: run `npm ci` in tests/js (CI does)")
    return node


# ---- the AWS CLI ----------------------------------------------------------------------------

def test_aws_cli_gets_dev_and_prod_roles_from_one_mfa_code(broker: Broker) -> None:
    broker.login("dev")

    dev = _aws_caller_identity(broker.client_environment("dev"))
    prod = _aws_caller_identity(broker.client_environment("prod"))

    assert dev["Arn"].startswith(DEV_ARN_PREFIX) and dev["Account"] == "222222222222"
    assert prod["Arn"].startswith(PROD_ARN_PREFIX) and prod["Account"] == "333333333333"
    # The CLI signed with exactly the role keys the endpoint serves, not with anything else it found.
    assert _identity_callers(broker) == [_served_key(broker, "dev"), _served_key(broker, "prod")]
    # One login, one code, for both profiles.
    assert broker.sts.count("GetSessionToken") == 1
    assert len(broker.sts.used_codes()) == 1
    assert all("TokenCode" not in c.params for c in broker.sts.calls if c.action != "GetSessionToken")


# ---- a real POSIX shell: eval "$(rolebroker env dev)" ---------------------------------------

def test_eval_rolebroker_env_in_sh_unsets_shadowing_variables_and_the_cli_gets_dev(broker: Broker) -> None:
    broker.login("dev")
    env = dict(os.environ)
    env.update(SHADOWING)
    env.update({
        # Venv on PATH, as after `source .venv/bin/activate`: the shell finds `rolebroker` and `aws`.
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', os.defpath)}",
        # `rolebroker env` talks to the test daemon, whose runtime files live here.
        "ROLEBROKER_RUNTIME_DIR": str(broker.daemon.settings.runtime_dir),
        # `rolebroker env` does not point STS anywhere; the eval must leave this alone.
        "AWS_ENDPOINT_URL_STS": broker.sts.endpoint_url,
        # The user's real files, where [default] holds Alice's long-term keys and region
        # us-east-1: `env` must hide them, or AWS_PROFILE=default would make the CLI Alice.
        "AWS_SHARED_CREDENTIALS_FILE": broker.files.credentials_file,
        "AWS_CONFIG_FILE": broker.files.config_file,
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    script = (
        'eval "$(rolebroker env dev)"\n'
        "aws sts get-caller-identity --output json || exit $?\n"
        'printf "%s\\n" ---environment---\n'
        '"$0" -c "import json, os; print(json.dumps(dict(os.environ)))"\n'
    )
    result = subprocess.run(["sh", "-c", script, sys.executable], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    identity_json, environment_json = result.stdout.split("---environment---\n")
    identity = json.loads(identity_json)
    after = json.loads(environment_json)

    assert identity["Arn"].startswith(DEV_ARN_PREFIX), identity
    assert _identity_callers(broker) == [_served_key(broker, "dev")]
    still_set = {name: after[name] for name in SHADOWING if name in after}
    assert still_set == {}, f"`rolebroker env` left shadowing variables set: {still_set}"
    assert after["AWS_CONTAINER_CREDENTIALS_FULL_URI"] == broker.url("dev")
    assert after["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
    assert after["AWS_ENDPOINT_URL_STS"] == broker.sts.endpoint_url
    # [profile dev] region, not [default]'s us-east-1: [default] of the stand-in config that
    # replaces the user's (whose [default] holds Alice's keys).
    assert "region = eu-west-1" in Path(after["AWS_CONFIG_FILE"]).read_text().split("\n[profile ")[0]
    assert after["AWS_CONFIG_FILE"] != broker.files.config_file
    assert broker.sts.count("GetSessionToken") == 1 and len(broker.sts.used_codes()) == 1
    # The files that hold long-term keys were hidden, and Alice's own keys signed nothing the CLI sent.
    assert after["AWS_SHARED_CREDENTIALS_FILE"] == "/dev/null"
    assert ALICE_KEY not in _identity_callers(broker)


# ---- the AWS SDK for JavaScript v3 ----------------------------------------------------------

def test_js_sdk_v3_default_chain_gets_the_dev_role(broker: Broker) -> None:
    node = _node_or_skip()
    broker.login("dev")
    env = broker.client_environment("dev")
    # Keeps a failure's stderr to the point: SDK releases from 2027 on warn on node < 22.
    env["AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED"] = "true"

    result = subprocess.run([node, str(JS_DIR / "caller_identity.mjs")], env=env, cwd=JS_DIR,
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(DEV_ARN_PREFIX), result.stdout
    assert _identity_callers(broker) == [_served_key(broker, "dev")]
    assert broker.sts.count("GetSessionToken") == 1 and len(broker.sts.used_codes()) == 1


def test_endpoint_body_passes_the_js_sdk_response_checks(broker: Broker) -> None:
    broker.login("dev")
    broker.settle()
    for profile in ("dev", "prod"):
        request = urllib.request.Request(broker.url(profile), headers={"Authorization": broker.token(profile)})
        with urllib.request.urlopen(request, timeout=10) as response:  # the JS SDK sends no Accept header
            status, raw = response.status, response.read()

        assert status == 200
        parsed = json.loads(raw)
        for name in JS_REQUIRED_FIELDS:
            assert isinstance(parsed.get(name), str) and parsed[name], f"{profile}: {name} = {parsed.get(name)!r}"
        match = re.fullmatch(JS_RFC3339, parsed["Expiration"], re.ASCII)
        assert match, f"{profile}: the JS SDK rejects Expiration {parsed['Expiration']!r}"
        year, month, day, hour, minute, second, fraction = match.groups()
        # buildDate's range checks, then the same instant computed in Python.
        assert 1 <= int(month) <= 12 and 1 <= int(day) <= 31
        assert int(hour) <= 23 and int(minute) <= 59 and int(second) <= 60
        expires = calendar.timegm((int(year), int(month), int(day), int(hour), int(minute), int(second)))
        expires += float(f"0.{fraction}") if fraction else 0.0
        # Not already inside the JS SDK's refresh window, or it would refetch on every call.
        assert expires - broker.clock.now() > JS_REFRESH_WINDOW, (profile, parsed["Expiration"])

        role = {"dev": DEV_ROLE, "prod": PROD_ROLE}[profile]
        assert parsed.get("RoleArn", role) == role


def test_js_rfc3339_regex_is_the_one_in_the_pinned_sdk() -> None:
    """Guards the copy above: after a version bump in tests/js, re-read the SDK and update it."""
    source = JS_DIR / "node_modules" / "@smithy" / "core" / "dist-es" / "submodules" / "serde" / "date-utils.js"
    if not source.is_file():
        pytest.skip("tests/js/node_modules is missing: run `npm ci` in tests/js (CI does)")
    assert f"const RFC3339 = new RegExp(/{JS_RFC3339}/);" in source.read_text()
    # And the regex means what the tests rely on: capital-Z UTC passes, an offset does not.
    assert re.fullmatch(JS_RFC3339, "2027-01-15T09:00:30Z", re.ASCII)
    assert re.fullmatch(JS_RFC3339, "2027-01-15T09:00:30.123Z", re.ASCII)
    assert not re.fullmatch(JS_RFC3339, "2027-01-15T09:00:30+00:00", re.ASCII)
    assert not re.fullmatch(JS_RFC3339, "2027-01-15T09:00:30Z\n", re.ASCII)
