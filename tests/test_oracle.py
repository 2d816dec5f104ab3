"""botocore as the oracle: every config in the matrix is resolved twice against one recording
STS, once by botocore's own provider chain (what `aws --profile X` does) and once through the
real daemon (login with a code, fetch the profile's credentials). Both must send the same calls:
the same actions, role, session name, external id, duration, MFA serial and code, signing key
and session token, to the same host. The only differences allowed are the deliberate ones,
each named in the README's "Where rolebroker reads your config differently" section.

Every endpoint is computed by each side itself and reached for real: an HTTPS proxy on
loopback answers for sts.us-gov-west-1.amazonaws.com and friends (tests/recording_sts.py),
so nothing leaves the machine.
"""

from __future__ import annotations

import http.client

import contextlib
import dataclasses
import json
import re
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore.credentials
import botocore.session
import pytest

from rolebroker.broker.clock import ManualClock
from rolebroker.broker.config import ConfigFiles, load_config
from rolebroker.broker.refresh import RefreshPolicy
from rolebroker.broker.server import Daemon, DaemonSettings
from rolebroker.broker.sts_world import IamUser, MfaDevice, Role, totp
from rolebroker.clients.daemon_client import DaemonError
from tests.harness import ALICE_KEY, ALICE_SECRET, MFA_SECRET, MFA_SERIAL, Broker, serve_in_thread
from tests.recording_sts import AwsHostsProxy, RecordingSts, Request

README = Path(__file__).resolve().parent.parent / "README.md"
DEV_ROLE = "arn:aws:iam::222222222222:role/dev"
BASE_ROLE = "arn:aws:iam::333333333333:role/base"
EXT_ROLE = "arn:aws:iam::444444444444:role/partner"
GOV_ROLE = "arn:aws-us-gov:iam::222222222222:role/dev"
GOV_SERIAL = "arn:aws-us-gov:iam::111111111111:mfa/alice"
CN_ROLE = "arn:aws-cn:iam::222222222222:role/dev"
CN_SERIAL = "arn:aws-cn:iam::111111111111:mfa/alice"
KEYS = f"aws_access_key_id = {ALICE_KEY}\naws_secret_access_key = {ALICE_SECRET}\n"
# alice's twins in the other partitions: an IAM user and MFA device there.
GOV_KEY, CN_KEY = "AKIAGOVALICE00000001", "AKIACNALICE000000001"
GOV_KEYS = f"aws_access_key_id = {GOV_KEY}\naws_secret_access_key = {ALICE_SECRET}\n"
CN_KEYS = f"aws_access_key_id = {CN_KEY}\naws_secret_access_key = {ALICE_SECRET}\n"
LONG_TERM_KEYS = (ALICE_KEY, GOV_KEY, CN_KEY)
TEMP = "aws_access_key_id = {TMP_KEY}\naws_secret_access_key = {TMP_SECRET}\naws_session_token = {TMP_TOKEN}\n"
GENERATED_NAME = re.compile(r"(botocore-session|rolebroker)-\d+")

# The deliberate differences: each is a rule turning what botocore sent into what rolebroker
# sends, and each is named (by these words) in the README section.
DELIBERATE = {
    "session-token": "buys one MFA session with GetSessionToken",
    "mfa-on-source": "`mfa_serial` only on the source profile",
    "session-name": "`rolebroker-<time>`",
    "region-from-source": "inherits the source profile's `region`",
    "profile-region-first": "beats `AWS_DEFAULT_REGION`",
    "hop-own-endpoint": "each hop of a role chain",
    "refused-up-front": "refused up front",
    "temporary-cap": "capped to 3600",
    "region-fallback": "signed for us-east-1",
}


@dataclass(frozen=True)
class Call:
    """A request, normalized: signers by what they are, secrets reduced to 'right or wrong'."""

    action: str
    host: str
    signer: str
    token: str  # "none", "ok" (the token of the signing key) or "WRONG"
    role: str | None = None
    session_name: str | None = None
    external_id: str | None = None
    duration: str | None = None
    serial: str | None = None
    code: bool = False


@dataclass(frozen=True)
class Case:
    id: str
    config: str
    credentials: str = ""
    profile: str = "dev"
    env: dict[str, str] = field(default_factory=dict)
    # Each deliberate difference that applies, with its arguments.
    deliberate: tuple[tuple[str, dict[str, Any]], ...] = ()


def _case(id: str, config: str, credentials: str = "", *deliberate: tuple[str, dict[str, Any]],
          profile: str = "dev", env: dict[str, str] | None = None) -> Any:
    return pytest.param(Case(id, config, credentials, profile, env or {}, deliberate), id=id)


def rule(name: str, **arguments: Any) -> tuple[str, dict[str, Any]]:
    assert name in DELIBERATE, name
    return name, arguments


# ---- the matrix --------------------------------------------------------------------------------

ROLE = f"[profile dev]\nrole_arn = {DEV_ROLE}\n"
LOCAL = "{LOCAL}"  # the recording STS's own loopback URL, for `services` / endpoint_url rows
CASES = [
    # Both file layouts, long-term keys, no MFA.
    _case("config-layout", f"[profile dev]\nrole_arn = {DEV_ROLE}\nsource_profile = alice\nregion = eu-west-1\n",
          f"[alice]\n{KEYS}"),
    _case("credentials-layout", "[profile dev]\nregion = eu-west-1\n",
          f"[default]\n{KEYS}\n[dev]\nrole_arn = {DEV_ROLE}\nsource_profile = default\n"),
    _case("keys-in-config-file", f"[profile alice]\n{KEYS}\n{ROLE}source_profile = alice\nregion = eu-west-1\n"),
    _case("self-sourced", f"{ROLE}source_profile = dev\nregion = eu-west-1\n", f"[dev]\n{KEYS}"),
    _case("external-id-name-duration",
          f"{ROLE}source_profile = alice\nregion = eu-west-1\nexternal_id = ext-1\n"
          "role_session_name = alice@example.com\nduration_seconds = 7200\n", f"[alice]\n{KEYS}"),
    _case("duration-unreadable", f"{ROLE}source_profile = alice\nregion = eu-west-1\nduration_seconds = 1h\n",
          f"[alice]\n{KEYS}"),
    _case("duration-out-of-range", f"{ROLE}source_profile = alice\nregion = eu-west-1\nduration_seconds = 60\n",
          f"[alice]\n{KEYS}", rule("refused-up-front")),
    _case("session-name-with-a-space",
          f"{ROLE}source_profile = alice\nregion = eu-west-1\nrole_session_name = alice smith\n",
          f"[alice]\n{KEYS}", rule("refused-up-front")),
    # MFA with long-term keys: the session-token strategy, the direct strategy, D3.
    _case("mfa-on-role-credentials-layout", "[profile dev]\nregion = eu-west-1\n",
          f"[default]\n{KEYS}\n[dev]\nrole_arn = {DEV_ROLE}\nsource_profile = default\nmfa_serial = {MFA_SERIAL}\n",
          rule("session-token", serial=MFA_SERIAL)),
    _case("mfa-on-role-duration-7200",
          f"{ROLE}source_profile = alice\nmfa_serial = {MFA_SERIAL}\nregion = eu-west-1\nduration_seconds = 7200\n",
          f"[alice]\n{KEYS}", rule("session-token", serial=MFA_SERIAL)),
    _case("mfa-on-source-only", f"[profile alice]\nmfa_serial = {MFA_SERIAL}\nregion = eu-west-1\n"
          f"{ROLE}source_profile = alice\nregion = eu-west-1\n", f"[alice]\n{KEYS}",
          rule("mfa-on-source", serial=MFA_SERIAL)),
    _case("direct-strategy", f"{ROLE}source_profile = alice\nmfa_serial = {MFA_SERIAL}\nregion = eu-west-1\n"
          "rolebroker_strategy = direct\nduration_seconds = 7200\n", f"[alice]\n{KEYS}"),
    # Temporary keys in the source profile (saml2aws, aws configure set): finding 1.
    _case("temporary-source-keys", f"{ROLE}source_profile = saml\nregion = eu-west-1\n", f"[saml]\n{TEMP}"),
    _case("temporary-source-keys-7200", f"{ROLE}source_profile = saml\nregion = eu-west-1\nduration_seconds = 7200\n",
          f"[saml]\n{TEMP}", rule("temporary-cap")),
    _case("temporary-source-keys-mfa-on-role",
          f"{ROLE}source_profile = saml\nmfa_serial = {MFA_SERIAL}\nregion = eu-west-1\n", f"[saml]\n{TEMP}"),
    _case("temporary-source-keys-mfa-on-source", f"{ROLE}source_profile = saml\nregion = eu-west-1\n",
          f"[saml]\n{TEMP}mfa_serial = {MFA_SERIAL}\n"),
    # Chains: finding 2's second hop, and where each hop's call goes.
    _case("chain", f"[profile base]\nrole_arn = {BASE_ROLE}\nsource_profile = alice\nregion = eu-west-1\n"
          f"{ROLE}source_profile = base\nregion = eu-west-1\n", f"[alice]\n{KEYS}"),
    _case("chain-mfa-on-second-hop",
          f"[profile base]\nrole_arn = {BASE_ROLE}\nsource_profile = alice\nregion = eu-west-1\n"
          f"{ROLE}source_profile = base\nmfa_serial = {MFA_SERIAL}\nregion = eu-west-1\n", f"[alice]\n{KEYS}"),
    _case("chain-mfa-on-first-hop",
          f"[profile base]\nrole_arn = {BASE_ROLE}\nsource_profile = alice\nmfa_serial = {MFA_SERIAL}\n"
          f"region = eu-west-1\n{ROLE}source_profile = base\nregion = eu-west-1\n", f"[alice]\n{KEYS}",
          rule("session-token", serial=MFA_SERIAL)),
    _case("chain-hops-in-two-regions",
          f"[profile base]\nrole_arn = {BASE_ROLE}\nsource_profile = alice\nregion = eu-central-1\n"
          f"{ROLE}source_profile = base\nregion = eu-west-1\n", f"[alice]\n{KEYS}",
          rule("hop-own-endpoint", role=BASE_ROLE, host="sts.eu-central-1.amazonaws.com")),
    # credential_source and credential_process sources: findings 2 and 5.
    _case("credential-source-long-term-7200",
          f"{ROLE}credential_source = Environment\nregion = eu-west-1\nduration_seconds = 7200\n",
          env={"AWS_ACCESS_KEY_ID": ALICE_KEY, "AWS_SECRET_ACCESS_KEY": ALICE_SECRET}),
    _case("credential-source-mfa",
          f"{ROLE}credential_source = Environment\nmfa_serial = {MFA_SERIAL}\nregion = eu-west-1\n",
          env={"AWS_ACCESS_KEY_ID": ALICE_KEY, "AWS_SECRET_ACCESS_KEY": ALICE_SECRET}),
    _case("credential-source-temporary-7200",
          f"{ROLE}credential_source = Environment\nregion = eu-west-1\nduration_seconds = 7200\n",
          "", rule("temporary-cap"), env={"AWS_ACCESS_KEY_ID": "{TMP_KEY}", "AWS_SECRET_ACCESS_KEY": "{TMP_SECRET}",
                                          "AWS_SESSION_TOKEN": "{TMP_TOKEN}"}),
    _case("process-long-term-7200", "[profile vault]\ncredential_process = {PROCESS_LONG}\n"
          f"{ROLE}source_profile = vault\nregion = eu-west-1\nduration_seconds = 7200\n"),
    _case("process-mfa", "[profile vault]\ncredential_process = {PROCESS_LONG}\n"
          f"{ROLE}source_profile = vault\nmfa_serial = {MFA_SERIAL}\nregion = eu-west-1\n"),
    _case("process-temporary", "[profile vault]\ncredential_process = {PROCESS_TEMP}\n"
          f"{ROLE}source_profile = vault\nregion = eu-west-1\n"),
    # Settings botocore refuses or prefers: finding 7.
    _case("source-profile-and-credential-source",
          f"{ROLE}source_profile = alice\ncredential_source = Environment\nregion = eu-west-1\n", f"[alice]\n{KEYS}",
          env={"AWS_ACCESS_KEY_ID": ALICE_KEY, "AWS_SECRET_ACCESS_KEY": ALICE_SECRET}),
    _case("sso-with-keys", "[profile alice]\nsso_start_url = https://rolebroker-oracle.invalid/start\n"
          "sso_region = us-east-1\nsso_account_id = 111111111111\nsso_role_name = dev\n"
          f"{ROLE}source_profile = alice\nregion = eu-west-1\n", f"[alice]\n{KEYS}"),
    # Regions, partitions, endpoints: findings 4 and 6.
    _case("aws-us-gov-mfa-on-role", f"[profile dev]\nrole_arn = {GOV_ROLE}\nsource_profile = gov\n"
          f"mfa_serial = {GOV_SERIAL}\nregion = us-gov-west-1\n", f"[gov]\n{GOV_KEYS}",
          rule("session-token", serial=GOV_SERIAL)),
    _case("aws-cn-mfa-on-role", f"[profile dev]\nrole_arn = {CN_ROLE}\nsource_profile = cn\n"
          f"mfa_serial = {CN_SERIAL}\nregion = cn-north-1\n", f"[cn]\n{CN_KEYS}",
          rule("session-token", serial=CN_SERIAL)),
    _case("aws-cn-region-on-source-only", f"[profile cn]\nregion = cn-north-1\n"
          f"[profile dev]\nrole_arn = {CN_ROLE}\nsource_profile = cn\n", f"[cn]\n{CN_KEYS}",
          rule("region-from-source", host="sts.cn-north-1.amazonaws.com.cn")),
    _case("no-region-anywhere", f"{ROLE}source_profile = alice\n", f"[alice]\n{KEYS}"),
    _case("region-from-environment", f"{ROLE}source_profile = alice\n", f"[alice]\n{KEYS}",
          env={"AWS_DEFAULT_REGION": "eu-central-1"}),
    _case("profile-region-and-environment", f"{ROLE}source_profile = alice\nregion = eu-west-1\n", f"[alice]\n{KEYS}",
          rule("profile-region-first", host="sts.eu-west-1.amazonaws.com"), env={"AWS_DEFAULT_REGION": "eu-central-1"}),
    _case("legacy-global-endpoint", f"{ROLE}source_profile = alice\nregion = us-east-1\nsts_regional_endpoints = legacy\n",
          f"[alice]\n{KEYS}"),
    _case("fips-endpoint", f"{ROLE}source_profile = alice\nregion = us-east-1\nuse_fips_endpoint = true\n",
          f"[alice]\n{KEYS}"),
    _case("services-endpoint-mfa-on-role",
          f"{ROLE}source_profile = alice\nmfa_serial = {MFA_SERIAL}\nregion = eu-west-1\nservices = local\n"
          f"[services local]\nsts =\n  endpoint_url = {LOCAL}/pinned\n", f"[alice]\n{KEYS}",
          rule("session-token", serial=MFA_SERIAL)),
    _case("endpoint-url-on-profile", f"{ROLE}source_profile = alice\nregion = eu-west-1\nendpoint_url = {LOCAL}/own\n",
          f"[alice]\n{KEYS}"),
    _case("endpoint-url-environment", f"{ROLE}source_profile = alice\nregion = eu-west-1\n", f"[alice]\n{KEYS}",
          env={"AWS_ENDPOINT_URL_STS": f"{LOCAL}/from-env"}),
    _case("endpoint-url-without-region", f"{ROLE}source_profile = alice\nendpoint_url = {LOCAL}/own\n",
          f"[alice]\n{KEYS}", rule("region-fallback")),
    # Names botocore accepts: finding 9.
    _case("name-with-a-space", f"[profile \"my profile\"]\nrole_arn = {DEV_ROLE}\nsource_profile = alice\n"
          "region = eu-west-1\n", f"[alice]\n{KEYS}", profile="my profile"),
    _case("credentials-section-named-profile-dev4", "",
          f"[alice]\n{KEYS}\n[profile dev4]\nrole_arn = {DEV_ROLE}\nsource_profile = alice\nregion = eu-west-1\n",
          profile="profile dev4"),
]


# ---- the deliberate differences, as rules --------------------------------------------------------

def apply_rules(calls: list[Call], case: Case) -> list[Call]:
    expected = [dataclasses.replace(c, session_name="<generated>") if c.session_name == "<botocore>" else c
                for c in calls]
    for name, arguments in case.deliberate:
        expected = RULES[name](expected, **arguments)
    return expected


def _session_token(calls: list[Call], serial: str) -> list[Call]:
    """The MFA code buys a GetSessionToken session (sent where the role's own STS client goes,
    with the role profile's serial); roles are assumed from it, capped at one hour."""
    out: list[Call] = []
    for call in calls:
        if call.action == "AssumeRole" and call.signer == "alice-keys":
            out.append(Call("GetSessionToken", call.host, "alice-keys", "none", duration="43200",
                            serial=serial, code=True))
            out.append(dataclasses.replace(call, signer="session:mfa", token="ok", serial=None, code=False,
                                           duration=str(min(int(call.duration or 3600), 3600))))
        else:
            out.append(call)
    return out


def _refused_up_front(calls: list[Call]) -> list[Call]:
    return []


def _host(calls: list[Call], host: str, role: str | None = None) -> list[Call]:
    return [dataclasses.replace(c, host=host) if role in (None, c.role) else c for c in calls]


def _temporary_cap(calls: list[Call]) -> list[Call]:
    return [dataclasses.replace(c, duration="3600") if c.action == "AssumeRole" else c for c in calls]


def _region_fallback(calls: list[Call]) -> list[Call]:
    # botocore stops before sending ("You must specify a region"); rolebroker signs for us-east-1.
    assert calls == [], calls
    return [Call("AssumeRole", "127.0.0.1/own", "alice-keys", "none", DEV_ROLE, "<generated>", duration="3600")]


RULES: dict[str, Callable[..., list[Call]]] = {
    "session-token": _session_token,
    "mfa-on-source": _session_token,
    "region-from-source": _host,
    "profile-region-first": _host,
    "hop-own-endpoint": _host,
    "refused-up-front": _refused_up_front,
    "temporary-cap": _temporary_cap,
    "region-fallback": _region_fallback,
}


# ---- the two sides -----------------------------------------------------------------------------

@dataclass
class World:
    tmp: Path
    clock: ManualClock
    sts: RecordingSts
    proxy: AwsHostsProxy
    temporary: dict[str, str]

    def new_clock(self) -> None:
        """A clock of its own for each row's daemon (a stopped daemon's sleepers stay on the
        old one), carrying on from the last: TOTP steps are used once, whatever the row."""
        self.clock = ManualClock(start=(self.clock.now() // 30 + 1) * 30)

    def fill(self, text: str) -> str:
        return (text.replace("{LOCAL}", f"http://127.0.0.1:{self.sts.port}")
                .replace("{TMP_KEY}", self.temporary["key"]).replace("{TMP_SECRET}", self.temporary["secret"])
                .replace("{TMP_TOKEN}", self.temporary["token"])
                .replace("{PROCESS_LONG}", self._helper("long", {"AccessKeyId": ALICE_KEY,
                                                                  "SecretAccessKey": ALICE_SECRET}))
                .replace("{PROCESS_TEMP}", self._helper("temp", {
                    "AccessKeyId": self.temporary["key"], "SecretAccessKey": self.temporary["secret"],
                    "SessionToken": self.temporary["token"], "Expiration": self.temporary["expiration"]})))

    def _helper(self, name: str, output: dict[str, str]) -> str:
        path = self.tmp / f"process-{name}.py"
        path.write_text(f"import json\nprint(json.dumps({json.dumps({'Version': 1, **output})}))\n")
        return f"{sys.executable} {path}"

    def next_code(self) -> str:
        self.clock.advance(30 - self.clock.now() % 30)
        return totp(MFA_SECRET, self.clock.now())

    def normalize(self, requests: list[Request]) -> list[Call]:
        issued = {c.access_key_id: c for c in self.sts.issued()}
        calls = []
        for request in requests:
            if request.action == "GetCallerIdentity":
                continue
            if request.key_id in LONG_TERM_KEYS:
                signer, expected_token = "alice-keys", None
            elif request.key_id == self.temporary["key"]:
                signer, expected_token = "file-temporary-keys", self.temporary["token"]
            elif request.key_id in issued:
                credential = issued[request.key_id]
                signer = f"role:{credential.role_arn}" if credential.kind == "role" else "session:mfa"
                expected_token = credential.session_token
            else:
                signer, expected_token = f"unknown:{request.key_id}", None
            token = "none" if request.token is None else "ok" if request.token == expected_token else "WRONG"
            params = request.params
            name = params.get("RoleSessionName")
            if name is not None and GENERATED_NAME.fullmatch(name):
                name = "<botocore>" if name.startswith("botocore") else "<generated>"
            host = request.host.split(":")[0] + request.path.rstrip("/")
            calls.append(Call(
                request.action, host, signer, token, params.get("RoleArn"), name, params.get("ExternalId"),
                # STS's own default when absent: the same request as far as the role is concerned.
                params.get("DurationSeconds", "3600" if request.action == "AssumeRole" else None),
                params.get("SerialNumber"), "TokenCode" in params))
        return calls


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("oracle")
    clock = ManualClock(start=(time.time() // 30 + 1) * 30)
    users = [IamUser(ALICE_KEY, ALICE_SECRET, "arn:aws:iam::111111111111:user/alice",
                     MfaDevice(MFA_SERIAL, MFA_SECRET)),
             IamUser(GOV_KEY, ALICE_SECRET, "arn:aws-us-gov:iam::111111111111:user/alice",
                     MfaDevice(GOV_SERIAL, MFA_SECRET)),
             IamUser(CN_KEY, ALICE_SECRET, "arn:aws-cn:iam::111111111111:user/alice",
                     MfaDevice(CN_SERIAL, MFA_SECRET))]
    roles = [Role(arn, max_session_duration=43200) for arn in (DEV_ROLE, BASE_ROLE, GOV_ROLE, CN_ROLE)]
    holder: list[World] = []
    sts = RecordingSts(users, [*roles, Role(EXT_ROLE, external_id="ext-1")],
                       now=lambda: holder[0].clock.now() if holder else clock.now()).start()
    proxy = AwsHostsProxy(sts.port)
    # Temporary keys as saml2aws would write them: a real session of alice's, from the same STS.
    client = botocore.session.Session().create_client("sts", region_name="us-east-1", endpoint_url=sts.endpoint_url,
                                        aws_access_key_id=ALICE_KEY, aws_secret_access_key=ALICE_SECRET)
    raw = client.get_session_token(DurationSeconds=129600)["Credentials"]
    temporary = {"key": raw["AccessKeyId"], "secret": raw["SecretAccessKey"], "token": raw["SessionToken"],
                 "expiration": raw["Expiration"].strftime("%Y-%m-%dT%H:%M:%SZ")}
    sts.take()
    holder.append(World(tmp, clock, sts, proxy, temporary))
    try:
        yield holder[0]
    finally:
        proxy.stop()
        sts.stop()


def write_files(world: World, case: Case, directory: Path) -> ConfigFiles:
    directory.mkdir()
    files = ConfigFiles(str(directory / "config"), str(directory / "credentials"))
    Path(files.config_file).write_text(world.fill(case.config))
    Path(files.credentials_file).write_text(world.fill(case.credentials))
    return files


def botocore_side(world: World, case: Case, files: ConfigFiles) -> str:
    """`aws --profile X sts get-caller-identity`, as the AWS CLI builds it on botocore."""
    session = botocore.session.Session(profile=case.profile)
    session.set_config_variable("config_file", files.config_file)
    session.set_config_variable("credentials_file", files.credentials_file)
    try:
        provider = session.get_component("credential_provider").get_provider("assume-role")
        provider._prompter = lambda _prompt: world.next_code()  # the terminal prompt, answered
        client = session.create_client("sts")
        client.get_caller_identity()
    except Exception as exc:  # what it sent is what counts; the outcome is shown on failure
        return type(exc).__name__
    return "ok"


@contextlib.contextmanager
def running_daemon(world: World, files: ConfigFiles, directory: Path) -> Iterator[Broker]:
    """The real daemon on a loopback port, reading `files`, on the row's clock."""
    settings = DaemonSettings(files=files, runtime_dir=directory / "run", state_dir=directory / "state", port=0)
    daemon = Daemon(settings, clock=world.clock, policy=RefreshPolicy(tick=30))
    loop, thread = serve_in_thread(daemon)
    try:
        yield Broker(directory, world.clock, world.sts, daemon, loop, thread, files)
    finally:
        daemon.stop()
        thread.join(10)
        loop.close()


def status_rows(broker: Broker) -> dict[str, dict[str, Any]]:
    return {row["profile"]: row for row in broker.control().request("GET", "/v1/status")["profiles"]}


def rolebroker_side(world: World, case: Case, files: ConfigFiles, directory: Path) -> str:
    with running_daemon(world, files, directory) as broker:
        outcome = "ok"
        if status_rows(broker).get(case.profile, {}).get("login_required"):
            try:
                broker.login(case.profile, world.next_code())
            except DaemonError as exc:
                outcome = f"login: {exc.code}"
        try:
            fetch(broker, case.profile)
        except DaemonError as exc:
            outcome = f"{outcome}; fetch: {exc.code}"
        broker.settle()
        return outcome


def fetch(broker: Broker, profile: str) -> None:
    """What an SDK does with `rolebroker env`: GET the (percent-encoded) profile's URL with
    its token, retrying a 503 once the in-flight STS call has landed."""
    token = broker.token(profile)
    for _ in range(2):
        connection = http.client.HTTPConnection("127.0.0.1", broker.port, timeout=30)
        try:
            connection.request("GET", f"/v1/credentials/{urllib.parse.quote(profile, safe='')}",
                               headers={"Authorization": token})
            response = connection.getresponse()
            body = json.loads(response.read())
        finally:
            connection.close()
        if response.status == 200:
            return
        if body.get("code") != "CredentialsPending":
            raise DaemonError(body.get("message", ""), body.get("code", "Error"), response.status)
        broker.settle()


@pytest.mark.parametrize("case", CASES)
def test_rolebroker_sends_what_botocore_sends(world: World, case: Case, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID",
                 "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_STS",
                 "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_STS_REGIONAL_ENDPOINTS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {**world.proxy.environment(), **case.env}.items():
        monkeypatch.setenv(name, world.fill(value))
    files = write_files(world, case, tmp_path / "aws")
    world.new_clock()
    world.sts.take()
    oracle_outcome = botocore_side(world, case, files)
    oracle = world.normalize(world.sts.take())
    broker_outcome = rolebroker_side(world, case, files, tmp_path / "broker")
    sent = world.normalize(world.sts.take())
    expected = apply_rules(oracle, case)
    assert sent == expected, (f"\nbotocore ({oracle_outcome}) sent:\n  " + "\n  ".join(map(str, oracle))
                              + f"\nrolebroker ({broker_outcome}) sent:\n  " + "\n  ".join(map(str, sent)))
    assert "WRONG" not in {c.token for c in sent}
    if not expected:  # nothing sent must be a refusal the user sees, not a daemon that never asked
        assert broker_outcome != "ok" and oracle_outcome != "ok", (oracle_outcome, broker_outcome)


def test_every_allowed_difference_is_named_in_the_readme() -> None:
    text = README.read_text()
    start = text.index("### Where rolebroker reads your config differently from the AWS CLI")
    section = text[start:text.index("\n##", start + 1)]
    missing = [name for name, words in DELIBERATE.items() if words not in section]
    assert not missing, missing
    used = {name for param in CASES for name, _ in param.values[0].deliberate}
    assert used | {"session-name"} == set(DELIBERATE)  # no rule is kept that no case needs


def test_status_says_what_the_aws_cli_would_do_differently(world: World, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in world.proxy.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", world.temporary["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", world.temporary["secret"])
    monkeypatch.setenv("AWS_SESSION_TOKEN", world.temporary["token"])
    case = Case("notes", world.fill(
        f"{ROLE}source_profile = alice\nduration_seconds = 1h\nendpoint_url = {LOCAL}/own\n"
        f"[profile cn]\nrole_arn = {CN_ROLE}\nsource_profile = cnkeys\n[profile cnkeys]\nregion = cn-north-1\n"
        f"[profile env]\nrole_arn = {DEV_ROLE}\ncredential_source = Environment\nduration_seconds = 7200\n"
        f"region = eu-west-1\n"), f"[alice]\n{KEYS}[cnkeys]\n{CN_KEYS}")
    files = write_files(world, case, tmp_path / "aws")
    world.new_clock()
    with running_daemon(world, files, tmp_path / "broker") as broker:
        fetch(broker, "env")  # its helper's keys turn out temporary only now
        rows = status_rows(broker)
        monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
        env_with_region = " ".join(status_rows(broker)["env"]["notes"])
    dev_notes, cn_notes, env_notes = (" ".join(rows[name]["notes"]) for name in ("dev", "cn", "env"))
    assert "duration_seconds = '1h' is not a whole number of seconds: using 3600" in dev_notes
    assert "signed for us-east-1" in dev_notes and "You must specify a region" in dev_notes
    assert "region cn-north-1 comes from source profile 'cnkeys'" in cn_notes
    assert "duration_seconds 7200 capped to 3600 (its source gave temporary credentials" in env_notes
    assert rows["env"]["duration"] == 7200 and "capped" not in dev_notes + cn_notes
    assert "AWS_DEFAULT_REGION" not in env_notes
    assert "region eu-west-1 of the profile is used, not AWS_DEFAULT_REGION=eu-central-1" in env_with_region


def test_ended_temporary_source_keys_say_who_renews_them(world: World, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in world.proxy.environment().items():
        monkeypatch.setenv(name, value)
    stale = TEMP.replace("{TMP_TOKEN}", "a-token-that-has-ended")
    files = write_files(world, Case("stale", f"{ROLE}source_profile = saml\nregion = eu-west-1\n",
                                    f"[saml]\n{stale}"), tmp_path / "aws")
    world.new_clock()
    with running_daemon(world, files, tmp_path / "broker") as broker:
        with pytest.raises(DaemonError) as refused:
            fetch(broker, "dev")
    assert refused.value.code == "StsDenied"
    assert "aws_session_token" in refused.value.message and "saml2aws" in refused.value.message
    assert "a-token-that-has-ended" not in refused.value.message


def test_a_name_with_a_space_reaches_botocores_container_provider(world: World, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in world.proxy.environment().items():
        monkeypatch.setenv(name, value)
    files = write_files(world, Case("space", f"[profile \"my profile\"]\nrole_arn = {DEV_ROLE}\n"
                                             "source_profile = alice\nregion = eu-west-1\n", f"[alice]\n{KEYS}"),
                        tmp_path / "aws")
    world.new_clock()
    with running_daemon(world, files, tmp_path / "broker") as broker:
        described = broker.control().request("GET", f"/v1/profiles/{urllib.parse.quote('my profile', safe='')}/env")
        url = described["endpoint_url"]
        assert url.endswith("/v1/credentials/my%20profile")
        provider = botocore.credentials.ContainerProvider(environ={
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": url, "AWS_CONTAINER_AUTHORIZATION_TOKEN": broker.token("my profile")})
        credentials = provider.load()
        assert credentials is not None and credentials.get_frozen_credentials().access_key.startswith("ASIA")


def test_a_name_botocore_accepts_but_a_url_cannot_carry_is_marked_in_status(world: World, tmp_path: Path) -> None:
    case = Case("slash", f"[profile team/dev]\nrole_arn = {DEV_ROLE}\nsource_profile = alice\n", f"[alice]\n{KEYS}")
    files = write_files(world, case, tmp_path / "aws")
    config = load_config(files)
    assert "team/dev" not in config.plans
    assert "cannot serve this name" in config.errors["team/dev"]


def test_an_mfa_code_on_a_second_hop_is_sent_and_a_refusal_explained(world: World, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in world.proxy.environment().items():
        monkeypatch.setenv(name, value)
    files = write_files(world, Case("hop", f"[profile base]\nrole_arn = {BASE_ROLE}\nsource_profile = alice\n"
                                           f"{ROLE}source_profile = base\nmfa_serial = {MFA_SERIAL}\n",
                                    f"[alice]\n{KEYS}"), tmp_path / "aws")
    world.new_clock()
    world.sts.take()
    with running_daemon(world, files, tmp_path / "broker") as broker:
        assert status_rows(broker)["dev"]["login_required"]
        with pytest.raises(DaemonError) as refused:
            broker.login("dev", world.next_code())
    assert refused.value.code == "MfaCodeRejected"
    assert "only against the IAM user whose long-term keys sign the call" in refused.value.message
    sent = world.normalize(world.sts.take())
    assert [(c.role, c.signer, c.serial, c.code) for c in sent] == [
        (BASE_ROLE, "alice-keys", None, False), (DEV_ROLE, f"role:{BASE_ROLE}", MFA_SERIAL, True)]
