"""The STS double, exercised through real boto3 clients over real HTTP.

Time is a manual clock (no sleeping); every client disables botocore retries so an
injected fault is seen exactly once and no test waits on a backoff.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.config
import pytest
from botocore import UNSIGNED
from botocore.exceptions import ClientError, ReadTimeoutError

from rolebroker.broker.sts_double import StsDouble
from rolebroker.broker.sts_world import IamUser, MfaDevice, Role, totp

START = 1_767_268_800.0  # 2026-01-01T12:00:00Z
SECRET = b"12345678901234567890"
ALICE_KEY, ALICE_SECRET = "AKIAALICE00000000001", "alice/secret/key/0000000000000000000000a"
BOB_KEY, BOB_SECRET = "AKIABOB0000000000001", "bob/secret/key/000000000000000000000000b"
ALICE_ARN = "arn:aws:iam::111111111111:user/alice"
ALICE_MFA = "arn:aws:iam::111111111111:mfa/alice"
BOB_MFA = "arn:aws:iam::111111111111:mfa/bob"
DEV = "arn:aws:iam::222222222222:role/dev"
LONG = "arn:aws:iam::222222222222:role/long"
ADMIN = "arn:aws:iam::222222222222:role/admin"
PARTNER = "arn:aws:iam::333333333333:role/partner"
NS = "{https://sts.amazonaws.com/doc/2011-06-15/}"
INVALID_CODE = "MultiFactorAuthentication failed with invalid MFA one time pass code. "  # sic: trailing space


def denied(caller: str, role: str) -> str:
    return f"User: {caller} is not authorized to perform: sts:AssumeRole on resource: {role}"


class FakeNow:
    """A clock that moves only when a test moves it."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(autouse=True)
def _isolated_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    # The developer's own AWS config must not steer the clients built here.
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_STS",
                 "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_RETRY_MODE",
                 "AWS_MAX_ATTEMPTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))


@pytest.fixture
def clock() -> FakeNow:
    return FakeNow(START)


@pytest.fixture
def double(clock: FakeNow) -> Iterator[StsDouble]:
    users = [
        IamUser(ALICE_KEY, ALICE_SECRET, ALICE_ARN, MfaDevice(ALICE_MFA, SECRET)),
        IamUser(BOB_KEY, BOB_SECRET, "arn:aws:iam::111111111111:user/bob", MfaDevice(BOB_MFA, None)),
    ]
    roles = [
        Role(DEV),
        Role(LONG, max_session_duration=7200),
        Role(ADMIN, require_mfa=True),
        Role(PARTNER, external_id="ext-123"),
    ]
    with StsDouble(users, roles, now=clock) as sts:
        yield sts


def client(double: StsDouble, key: str, secret: str, token: str | None = None, **config: Any) -> Any:
    cfg = botocore.config.Config(retries={"total_max_attempts": 1}, **config)
    return boto3.client("sts", endpoint_url=double.endpoint_url, region_name="us-east-1",
                        aws_access_key_id=key, aws_secret_access_key=secret, aws_session_token=token, config=cfg)


def from_creds(double: StsDouble, creds: dict[str, Any], **config: Any) -> Any:
    return client(double, creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"], **config)


def alice(double: StsDouble, **config: Any) -> Any:
    return client(double, ALICE_KEY, ALICE_SECRET, **config)


def error_of(exc: pytest.ExceptionInfo[ClientError]) -> tuple[int, str, str]:
    resp = exc.value.response
    return resp["ResponseMetadata"]["HTTPStatusCode"], resp["Error"]["Code"], resp["Error"]["Message"]


def mfa_session(double: StsDouble, clock: FakeNow, duration: int = 43200) -> dict[str, Any]:
    code = totp(SECRET, clock())
    out = alice(double).get_session_token(DurationSeconds=duration, SerialNumber=ALICE_MFA, TokenCode=code)
    creds: dict[str, Any] = out["Credentials"]
    return creds


def raw_post(double: StsDouble, body: bytes, headers: dict[str, str]) -> tuple[int, str, ET.Element]:
    req = urllib.request.Request(double.endpoint_url + "/", data=body, method="POST", headers={
        "Content-Type": "application/x-www-form-urlencoded", **headers})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], ET.fromstring(resp.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.headers["Content-Type"], ET.fromstring(err.read())


ALICE_AUTH = {"Authorization": f"AWS4-HMAC-SHA256 Credential={ALICE_KEY}/20260101/us-east-1/sts/aws4_request, "
                               "SignedHeaders=host;x-amz-date, Signature=00"}


# -- TOTP ---------------------------------------------------------------------------------------

def test_totp_matches_rfc_6238_vectors() -> None:
    assert totp(SECRET, 59, digits=8) == "94287082"
    assert totp(SECRET, 1111111109, digits=8) == "07081804"
    assert totp(SECRET, 20000000000, digits=8) == "65353130"
    assert totp(SECRET, 59) == "287082"


# -- GetSessionToken ----------------------------------------------------------------------------

def test_get_session_token_with_correct_totp(double: StsDouble, clock: FakeNow) -> None:
    code = totp(SECRET, clock())
    out = alice(double).get_session_token(DurationSeconds=3600, SerialNumber=ALICE_MFA, TokenCode=code)
    creds = out["Credentials"]
    assert creds["AccessKeyId"].startswith("ASIA") and len(creds["AccessKeyId"]) == 20
    assert creds["AccessKeyId"].isalnum() and creds["AccessKeyId"].isupper()
    assert len(creds["SecretAccessKey"]) == 40 and len(creds["SessionToken"]) > 100
    assert creds["Expiration"] == dt.datetime(2026, 1, 1, 13, 0, tzinfo=dt.UTC)
    assert double.used_codes() == [code]
    [issued] = double.issued()
    assert (issued.kind, issued.mfa_authenticated, issued.chain_depth) == ("session", True, 0)
    assert issued.expiration == START + 3600
    call = double.calls[-1]
    assert (call.action, call.caller_access_key_id, call.status, call.error_code) == (
        "GetSessionToken", ALICE_KEY, 200, None)
    assert call.params == {"DurationSeconds": "3600", "SerialNumber": ALICE_MFA, "TokenCode": code}


def test_default_session_duration_is_12_hours_without_mfa(double: StsDouble) -> None:
    creds = alice(double).get_session_token()["Credentials"]
    assert creds["Expiration"] == dt.datetime(2026, 1, 2, 0, 0, tzinfo=dt.UTC)
    assert double.issued()[0].mfa_authenticated is False


def test_reused_code_is_refused_with_the_real_message(double: StsDouble, clock: FakeNow) -> None:
    code = totp(SECRET, clock())
    alice(double).get_session_token(SerialNumber=ALICE_MFA, TokenCode=code)
    clock.t += 10  # same 30 s step, well inside the window
    with pytest.raises(ClientError) as exc:
        alice(double).get_session_token(SerialNumber=ALICE_MFA, TokenCode=code)
    assert error_of(exc) == (403, "AccessDenied", INVALID_CODE)
    assert double.used_codes() == [code]
    assert double.count("GetSessionToken", ok=True) == 1 and double.count("GetSessionToken", ok=False) == 1


def test_wrong_code_is_refused(double: StsDouble, clock: FakeNow) -> None:
    wrong = f"{(int(totp(SECRET, clock())) + 1) % 1_000_000:06d}"
    with pytest.raises(ClientError) as exc:
        alice(double).get_session_token(SerialNumber=ALICE_MFA, TokenCode=wrong)
    assert error_of(exc)[:2] == (403, "AccessDenied")
    assert "invalid MFA one time pass code" in error_of(exc)[2]
    assert double.used_codes() == []


def test_drift_window_is_one_step_each_way(double: StsDouble, clock: FakeNow) -> None:
    sts = alice(double)
    for offset in (-30, 30):
        sts.get_session_token(SerialNumber=ALICE_MFA, TokenCode=totp(SECRET, clock() + offset))
    too_old = totp(SECRET, clock() - 60)
    with pytest.raises(ClientError) as exc:
        sts.get_session_token(SerialNumber=ALICE_MFA, TokenCode=too_old)
    assert error_of(exc)[1] == "AccessDenied"
    assert len(double.used_codes()) == 2


def test_mfa_serial_and_pairing_are_checked(double: StsDouble, clock: FakeNow) -> None:
    sts = alice(double, parameter_validation=False)
    with pytest.raises(ClientError) as exc:
        sts.get_session_token(SerialNumber=BOB_MFA, TokenCode=totp(SECRET, clock()))
    assert error_of(exc)[:2] == (403, "AccessDenied")
    assert error_of(exc)[2].startswith("MultiFactorAuthentication failed, unable to validate MFA code.")
    with pytest.raises(ClientError) as exc:
        sts.get_session_token(SerialNumber=ALICE_MFA)
    assert error_of(exc)[:2] == (400, "ValidationError")
    with pytest.raises(ClientError) as exc:
        sts.get_session_token(SerialNumber=ALICE_MFA, TokenCode="12345a")
    assert error_of(exc)[:2] == (400, "ValidationError")
    assert "12345a" not in error_of(exc)[2]
    assert double.used_codes() == []


def test_demo_device_accepts_any_code_once(double: StsDouble) -> None:
    bob = client(double, BOB_KEY, BOB_SECRET)
    assert bob.get_session_token(SerialNumber=BOB_MFA, TokenCode="000000")["Credentials"]["AccessKeyId"]
    with pytest.raises(ClientError) as exc:
        bob.get_session_token(SerialNumber=BOB_MFA, TokenCode="000000")
    assert error_of(exc)[1] == "AccessDenied"
    bob.get_session_token(SerialNumber=BOB_MFA, TokenCode="123456")
    assert double.used_codes() == ["000000", "123456"]


@pytest.mark.parametrize(("duration", "expected"), [
    (899, "Value '899' at 'durationSeconds' failed to satisfy constraint: "
          "Member must have value greater than or equal to 900"),
    (129601, "Value '129601' at 'durationSeconds' failed to satisfy constraint: "
             "Member must have value less than or equal to 129600"),
])
def test_session_duration_bounds(double: StsDouble, duration: int, expected: str) -> None:
    # parameter_validation off: botocore would refuse these client-side before STS sees them.
    sts = alice(double, parameter_validation=False)
    with pytest.raises(ClientError) as exc:
        sts.get_session_token(DurationSeconds=duration)
    assert error_of(exc) == (400, "ValidationError", "1 validation error detected: " + expected)
    assert sts.get_session_token(DurationSeconds=129600)["Credentials"]["Expiration"] == dt.datetime(
        2026, 1, 3, 0, 0, tzinfo=dt.UTC)
    assert sts.get_session_token(DurationSeconds=900)["Credentials"]


def test_session_credentials_cannot_call_get_session_token(double: StsDouble, clock: FakeNow) -> None:
    with pytest.raises(ClientError) as exc:
        from_creds(double, mfa_session(double, clock)).get_session_token()
    assert error_of(exc) == (403, "AccessDenied", "Cannot call GetSessionToken with session credentials")


# -- AssumeRole ---------------------------------------------------------------------------------

def test_assume_role_from_session_is_capped_at_one_hour(double: StsDouble, clock: FakeNow) -> None:
    session = from_creds(double, mfa_session(double, clock))
    with pytest.raises(ClientError) as exc:
        session.assume_role(RoleArn=DEV, RoleSessionName="s1", DurationSeconds=3601)
    assert error_of(exc) == (400, "ValidationError", "The requested DurationSeconds exceeds the 1 hour "
                                                    "session limit for roles assumed by role chaining.")
    out = session.assume_role(RoleArn=LONG, RoleSessionName="s1", DurationSeconds=3600)
    assert out["Credentials"]["Expiration"] == dt.datetime(2026, 1, 1, 13, 0, tzinfo=dt.UTC)
    assert out["AssumedRoleUser"]["Arn"] == "arn:aws:sts::222222222222:assumed-role/long/s1"
    assert out["AssumedRoleUser"]["AssumedRoleId"].startswith("AROA")
    assert out["AssumedRoleUser"]["AssumedRoleId"].endswith(":s1")


def test_long_term_assume_role_up_to_max_session_duration(double: StsDouble) -> None:
    sts = alice(double)
    out = sts.assume_role(RoleArn=LONG, RoleSessionName="work", DurationSeconds=7200)
    assert out["Credentials"]["Expiration"] == dt.datetime(2026, 1, 1, 14, 0, tzinfo=dt.UTC)
    assert double.issued()[-1].chain_depth == 1 and double.issued()[-1].role_arn == LONG
    with pytest.raises(ClientError) as exc:
        sts.assume_role(RoleArn=LONG, RoleSessionName="work", DurationSeconds=7201)
    assert error_of(exc) == (400, "ValidationError",
                             "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.")
    with pytest.raises(ClientError) as exc:
        sts.assume_role(RoleArn=DEV, RoleSessionName="work", DurationSeconds=3601)
    assert "MaxSessionDuration" in error_of(exc)[2]
    default = sts.assume_role(RoleArn=DEV, RoleSessionName="work")
    assert default["Credentials"]["Expiration"] == dt.datetime(2026, 1, 1, 13, 0, tzinfo=dt.UTC)


def test_assume_role_duration_minimum(double: StsDouble) -> None:
    sts = alice(double, parameter_validation=False)
    with pytest.raises(ClientError) as exc:
        sts.assume_role(RoleArn=DEV, RoleSessionName="x1", DurationSeconds=899)
    assert error_of(exc)[:2] == (400, "ValidationError")
    assert "greater than or equal to 900" in error_of(exc)[2]


def test_assume_role_expiry_is_not_capped_by_caller_expiry(double: StsDouble, clock: FakeNow) -> None:
    session = from_creds(double, mfa_session(double, clock, duration=900))
    out = session.assume_role(RoleArn=DEV, RoleSessionName="s1", DurationSeconds=3600)
    assert out["Credentials"]["Expiration"] == dt.datetime(2026, 1, 1, 13, 0, tzinfo=dt.UTC)


def test_unknown_role_and_bad_session_name(double: StsDouble) -> None:
    sts = alice(double)
    missing = "arn:aws:iam::222222222222:role/nope"
    with pytest.raises(ClientError) as exc:
        sts.assume_role(RoleArn=missing, RoleSessionName="s1")
    assert error_of(exc) == (403, "AccessDenied", denied(ALICE_ARN, missing))
    with pytest.raises(ClientError) as exc:
        sts.assume_role(RoleArn=DEV, RoleSessionName="bad name!")
    assert error_of(exc)[:2] == (400, "ValidationError")
    assert "roleSessionName" in error_of(exc)[2]


def test_require_mfa_via_mfa_session_is_allowed(double: StsDouble, clock: FakeNow) -> None:
    out = from_creds(double, mfa_session(double, clock)).assume_role(RoleArn=ADMIN, RoleSessionName="adm")
    assert out["AssumedRoleUser"]["Arn"] == "arn:aws:sts::222222222222:assumed-role/admin/adm"
    assert double.issued()[-1].mfa_authenticated is True


def test_require_mfa_without_mfa_is_denied(double: StsDouble) -> None:
    plain = from_creds(double, alice(double).get_session_token()["Credentials"])
    with pytest.raises(ClientError) as exc:
        plain.assume_role(RoleArn=ADMIN, RoleSessionName="adm")
    assert error_of(exc)[:2] == (403, "AccessDenied")
    with pytest.raises(ClientError) as exc:
        alice(double).assume_role(RoleArn=ADMIN, RoleSessionName="adm")
    assert error_of(exc) == (403, "AccessDenied", denied(ALICE_ARN, ADMIN))


def test_require_mfa_via_role_chain_is_denied(double: StsDouble, clock: FakeNow) -> None:
    dev = from_creds(double, from_creds(double, mfa_session(double, clock))
                     .assume_role(RoleArn=DEV, RoleSessionName="hop1")["Credentials"])
    with pytest.raises(ClientError) as exc:
        dev.assume_role(RoleArn=ADMIN, RoleSessionName="hop2")
    assert error_of(exc) == (403, "AccessDenied", denied("arn:aws:sts::222222222222:assumed-role/dev/hop1", ADMIN))
    # A non-MFA role is still reachable by chaining, one level deeper.
    dev.assume_role(RoleArn=LONG, RoleSessionName="hop2")
    assert double.issued()[-1].chain_depth == 2 and double.issued()[-1].mfa_authenticated is False


def test_long_term_assume_role_with_mfa_code(double: StsDouble, clock: FakeNow) -> None:
    code = totp(SECRET, clock())
    alice(double).assume_role(RoleArn=ADMIN, RoleSessionName="adm", SerialNumber=ALICE_MFA, TokenCode=code)
    assert double.issued()[-1].mfa_authenticated is True
    # Single use is shared with GetSessionToken.
    with pytest.raises(ClientError) as exc:
        alice(double).get_session_token(SerialNumber=ALICE_MFA, TokenCode=code)
    assert error_of(exc)[1] == "AccessDenied"


def test_external_id_must_match(double: StsDouble) -> None:
    sts = alice(double)
    for bad in ({}, {"ExternalId": "ext-999"}):
        with pytest.raises(ClientError) as exc:
            sts.assume_role(RoleArn=PARTNER, RoleSessionName="p1", **bad)
        assert error_of(exc)[:2] == (403, "AccessDenied")
    assert sts.assume_role(RoleArn=PARTNER, RoleSessionName="p1", ExternalId="ext-123")["Credentials"]


# -- credentials, identity and authentication ---------------------------------------------------

def test_expired_credentials_are_refused(double: StsDouble, clock: FakeNow) -> None:
    session_creds = mfa_session(double, clock, duration=900)
    role_creds = from_creds(double, session_creds).assume_role(RoleArn=DEV, RoleSessionName="r1")["Credentials"]
    session, role = from_creds(double, session_creds), from_creds(double, role_creds)
    clock.t += 899
    assert session.get_caller_identity()["Arn"] == ALICE_ARN
    clock.t += 1
    with pytest.raises(ClientError) as exc:
        session.get_caller_identity()
    assert error_of(exc) == (400, "ExpiredToken", "The security token included in the request is expired")
    assert role.get_caller_identity()["Arn"].endswith("assumed-role/dev/r1")
    clock.t += 2700
    with pytest.raises(ClientError) as exc:
        role.get_caller_identity()
    assert error_of(exc)[1] == "ExpiredToken"


def test_get_caller_identity_arns(double: StsDouble, clock: FakeNow) -> None:
    me = alice(double).get_caller_identity()
    assert (me["Arn"], me["Account"]) == (ALICE_ARN, "111111111111")
    assert me["UserId"].startswith("AIDA")
    session = from_creds(double, mfa_session(double, clock))
    assert session.get_caller_identity()["Arn"] == ALICE_ARN
    assert session.get_caller_identity()["UserId"] == me["UserId"]
    role = from_creds(double, session.assume_role(RoleArn=DEV, RoleSessionName="who")["Credentials"])
    ident = role.get_caller_identity()
    assert ident["Arn"] == "arn:aws:sts::222222222222:assumed-role/dev/who"
    assert ident["Account"] == "222222222222"
    assert ident["UserId"].startswith("AROA") and ident["UserId"].endswith(":who")


def test_unknown_key_and_wrong_token_are_invalid(double: StsDouble, clock: FakeNow) -> None:
    with pytest.raises(ClientError) as exc:
        client(double, "AKIAUNKNOWN000000000", "x" * 40).get_caller_identity()
    assert error_of(exc) == (403, "InvalidClientTokenId", "The security token included in the request is invalid.")
    creds = mfa_session(double, clock)
    for token in ("forged", None):
        forged = client(double, creds["AccessKeyId"], creds["SecretAccessKey"], token)
        with pytest.raises(ClientError) as exc:
            forged.get_caller_identity()
        assert error_of(exc)[:2] == (403, "InvalidClientTokenId")


def test_missing_authentication(double: StsDouble) -> None:
    with pytest.raises(ClientError) as exc:
        alice(double, signature_version=UNSIGNED).get_caller_identity()
    assert error_of(exc)[:2] == (403, "MissingAuthenticationToken")
    assert double.calls[-1].caller_access_key_id == ""


def test_wire_format_and_unknown_action(double: StsDouble) -> None:
    status, ctype, root = raw_post(double, b"Action=GetCallerIdentity&Version=2011-06-15", ALICE_AUTH)
    assert (status, ctype, root.tag) == (200, "text/xml", NS + "GetCallerIdentityResponse")
    assert root.findtext(f"{NS}GetCallerIdentityResult/{NS}Arn") == ALICE_ARN
    assert root.findtext(f"{NS}ResponseMetadata/{NS}RequestId")
    status, ctype, root = raw_post(double, b"Action=DescribeNothing&Version=2011-06-15", ALICE_AUTH)
    assert (status, ctype, root.tag) == (400, "text/xml", NS + "ErrorResponse")
    assert root.findtext(f"{NS}Error/{NS}Code") == "InvalidAction"
    assert root.findtext(f"{NS}Error/{NS}Type") == "Sender"
    status, _, root = raw_post(double, b"Action=GetCallerIdentity", {"Authorization": "garbage"})
    assert (status, root.findtext(f"{NS}Error/{NS}Code")) == (403, "MissingAuthenticationToken")


def test_error_messages_are_xml_escaped(double: StsDouble) -> None:
    body = b"Action=AssumeRole&RoleSessionName=ok&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2F%3Cx%3E%26"
    status, _, root = raw_post(double, body, ALICE_AUTH)  # ET would raise on unescaped markup
    assert status == 403
    assert (root.findtext(f"{NS}Error/{NS}Message") or "").endswith("arn:aws:iam::1:role/<x>&")


# -- faults -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("fault", "status", "code", "kind"), [
    ("throttling", 400, "Throttling", "Sender"),
    ("server_error", 500, "InternalFailure", "Receiver"),
    ("unavailable", 503, "ServiceUnavailable", "Receiver"),
])
def test_error_faults(double: StsDouble, fault: str, status: int, code: str, kind: str) -> None:
    sts = alice(double)
    double.inject_fault("GetCallerIdentity", fault)
    sts.get_session_token()  # a different action is not affected
    with pytest.raises(ClientError) as exc:
        sts.get_caller_identity()
    assert error_of(exc)[:2] == (status, code)
    if fault == "throttling":
        assert error_of(exc)[2] == "Rate exceeded"
    assert sts.get_caller_identity()["Arn"] == ALICE_ARN  # times=1: used up
    assert double.count("GetCallerIdentity", ok=False) == 1 and double.count("GetCallerIdentity", ok=True) == 1
    _, _, root = raw_post(double, b"Action=GetCallerIdentity", ALICE_AUTH)
    assert root.tag == NS + "GetCallerIdentityResponse"
    double.inject_fault(None, fault)
    _, _, root = raw_post(double, b"Action=GetCallerIdentity", ALICE_AUTH)
    assert root.findtext(f"{NS}Error/{NS}Type") == kind


def test_fault_times_and_clear(double: StsDouble) -> None:
    sts = alice(double)
    double.inject_fault(None, "throttling", times=2)
    for _ in range(2):
        with pytest.raises(ClientError):
            sts.get_caller_identity()
    assert sts.get_caller_identity()["Arn"] == ALICE_ARN
    double.inject_fault(None, "unavailable", times=5)
    double.clear_faults()
    assert sts.get_caller_identity()["Arn"] == ALICE_ARN
    with pytest.raises(ValueError):
        double.inject_fault(None, "meteor")


def test_timeout_fault_holds_until_released(double: StsDouble) -> None:
    double.inject_fault("GetCallerIdentity", "timeout")
    sts = alice(double, read_timeout=1, connect_timeout=1)
    with pytest.raises(ReadTimeoutError):
        sts.get_caller_identity()
    assert double.calls[-1].status == 0 and double.calls[-1].error_code == "timeout"
    double.release_hung()
    assert sts.get_caller_identity()["Arn"] == ALICE_ARN
    assert double.count("GetCallerIdentity") == 2 and double.count("GetCallerIdentity", ok=True) == 1


def test_stop_releases_a_hung_request(clock: FakeNow) -> None:
    sts = StsDouble([IamUser(ALICE_KEY, ALICE_SECRET, ALICE_ARN)], [], now=clock).start()
    sts.inject_fault(None, "timeout")
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            raw_post(sts, b"Action=GetCallerIdentity", ALICE_AUTH)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion below
            outcome.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    for _ in range(500):  # wait (bounded) until the request is held
        if sts.count("GetCallerIdentity"):
            break
        threading.Event().wait(0.01)
    sts.stop()
    worker.join(timeout=5)
    assert not worker.is_alive()
    assert len(outcome) == 1 and not isinstance(outcome[0], TimeoutError)  # closed, not answered


# -- secrets stay out of reprs and logs ---------------------------------------------------------

def test_reprs_and_logs_hold_no_secret(double: StsDouble, clock: FakeNow,
                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="rolebroker.sts_double")
    code = totp(SECRET, clock())
    creds = mfa_session(double, clock)
    role = from_creds(double, creds).assume_role(RoleArn=DEV, RoleSessionName="r1")["Credentials"]
    with pytest.raises(ClientError):
        from_creds(double, creds).get_session_token()
    text = " ".join([repr(double.calls), repr(double.issued()), str(double.calls), caplog.text])
    assert creds["AccessKeyId"] in text and "GetSessionToken" in caplog.text  # the check sees real output
    secrets_ = [ALICE_SECRET, BOB_SECRET, SECRET.decode(), code, creds["SecretAccessKey"], creds["SessionToken"],
                role["SecretAccessKey"], role["SessionToken"]]
    for secret in secrets_:
        assert secret not in text
    assert double.calls[0].params["TokenCode"] == code  # kept for assertions, masked in repr


def test_query_strings_are_not_logged(double: StsDouble, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="rolebroker.sts_double")
    req = urllib.request.Request(double.endpoint_url + "/?Action=GetCallerIdentity&X-Amz-Security-Token=tok3n",
                                 headers=ALICE_AUTH)
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200  # GET with query parameters is served like POST
    assert "GET" in caplog.text and "tok3n" not in caplog.text
    assert "X-Amz-Security-Token" not in double.calls[-1].params


def test_constructor_and_lifecycle_checks(clock: FakeNow) -> None:
    user = IamUser(ALICE_KEY, ALICE_SECRET, ALICE_ARN)
    with pytest.raises(ValueError):
        StsDouble([user, user], [], now=clock)
    with pytest.raises(ValueError):
        StsDouble([user], [Role(DEV, max_session_duration=50000)], now=clock)
    sts = StsDouble([user], [], now=clock)
    with pytest.raises(RuntimeError):
        _ = sts.endpoint_url
    with sts:
        assert sts.endpoint_url.startswith("http://127.0.0.1:")
        with pytest.raises(RuntimeError):
            sts.start()
    sts.stop()  # idempotent
    assert ALICE_SECRET not in repr(user)
