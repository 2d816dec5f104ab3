"""The STS edge: the only module that talks to STS. Everything is synchronous
(botocore); the session layer runs these calls in a thread pool.

Clients are built by botocore from the user's own config, so the endpoint is found
the way every AWS tool finds it: AWS_ENDPOINT_URL_STS, AWS_ENDPOINT_URL, a
`services` section, the profile's `endpoint_url`, the profile's region (no region at
all: STS's global endpoint, as the AWS CLI picks it).
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

from .config import ConfigFiles, new_botocore_session
from .errors import (
    BrokerError,
    LoginRequired,
    MfaCodeRejected,
    ProfileConfigError,
    StsDenied,
    StsUnavailable,
    login_hint,
)
from .models import Credentials, SourceSecret, StaticKeys

if TYPE_CHECKING:
    import botocore.session

log = logging.getLogger("rolebroker.sts")


# botocore's client machinery (botocore.session, .client, .config) is imported with the first
# STS call, on an STS worker thread: a daemon whose first request needs no STS call answers
# it without paying for that import, the largest part of its start-up otherwise.
@functools.cache
def client_config() -> Any:
    import botocore.config

    # STS calls run off the request path, but a hung endpoint must not hold a worker for long.
    # One attempt per call: retries and their backoff belong to the refresh policy alone.
    return botocore.config.Config(
        connect_timeout=3,
        read_timeout=5,
        retries={"mode": "standard", "total_max_attempts": 1},
    )


FALLBACK_REGION = "us-east-1"

TRANSIENT_CODES = {
    "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException",
    "InternalFailure", "InternalError", "ServiceUnavailable", "IDPCommunicationError",
}
BAD_KEY_CODES = {"InvalidClientTokenId", "SignatureDoesNotMatch", "UnrecognizedClientException",
                 "IncompleteSignature", "MissingAuthenticationToken"}


class StsGateway(Protocol):
    def get_session_token(self, profile: str, keys: StaticKeys, duration: int,
                          serial: str | None, code: str | None, region: str | None,
                          login_profile: str | None = None) -> Credentials: ...

    def assume_role(self, profile: str, source: SourceSecret, role_arn: str, session_name: str,
                    duration: int, external_id: str | None, region: str | None,
                    serial: str | None = None, code: str | None = None) -> Credentials: ...

    def resolve_source(self, profile: str, credential_source: str | None = None) -> SourceSecret: ...

    def endpoint(self, profile: str, region: str | None) -> StsEndpoint: ...


class StsEndpoint(NamedTuple):
    url: str
    region: str
    # An endpoint URL and no region anywhere: the AWS CLI stops ("You must specify a
    # region"); we sign for us-east-1, which every STS-compatible endpoint accepts.
    region_fallback: bool


class BotocoreSts:
    """StsGateway on botocore, configured by the user's AWS config files."""

    def __init__(self, files: ConfigFiles) -> None:
        self.files = files
        # A botocore session costs ~90 ms and ~150 KB to build, a client from it ~5 ms: keep
        # one for all profiles and switch its profile (which is all botocore.Session(profile=)
        # does) under a lock, since sessions are not thread-safe. Clients are.
        self._session: botocore.session.Session | None = None
        self._lock = threading.Lock()
        self._endpoints: dict[tuple[str, str | None], StsEndpoint] = {}

    def reset(self) -> None:
        """Forget the cached session (it holds the parsed config files)."""
        with self._lock:
            self._session = None
            self._endpoints = {}

    def _client(self, profile: str, secret: SourceSecret, region: str | None) -> Any:
        return self._client_and_fallback(profile, secret, region)[0]

    def _client_and_fallback(self, profile: str, secret: SourceSecret, region: str | None) -> tuple[Any, bool]:
        # Temporary keys sign with their token, wherever they came from (the files, a helper).
        token = secret.session_token
        with self._lock:
            if self._session is None:
                self._session = sts_session(self.files)
            session = self._session
            session.set_config_variable("profile", profile)
            # A profile's own region beats AWS_DEFAULT_REGION (the daemon's environment is
            # not the shell the user types `aws` in); no region at all: the global endpoint.
            wanted = region or session.get_config_variable("region")
            client = self._create(session, wanted, secret.access_key_id, secret.secret_access_key, token)
            if client.meta.region_name is not None:
                return client, False
            # An endpoint URL but no region to sign for (see StsEndpoint.region_fallback).
            return self._create(session, FALLBACK_REGION, secret.access_key_id,
                                secret.secret_access_key, token), True

    @staticmethod
    def _create(session: botocore.session.Session, region: str | None, key: str, secret: str,
                token: str | None) -> Any:
        return session.create_client("sts", region_name=region, aws_access_key_id=key,
                                     aws_secret_access_key=secret, aws_session_token=token,
                                     config=client_config())

    def endpoint(self, profile: str, region: str | None) -> StsEndpoint:
        """Where this profile's STS calls go, and the region they are signed for."""
        known = self._endpoints.get((profile, region))
        if known is None:
            client, fallback = self._client_and_fallback(profile, StaticKeys("AKIDENDPOINTPROBE000", "unused"),
                                                         region)
            known = self._endpoints[(profile, region)] = StsEndpoint(client.meta.endpoint_url,
                                                                     client.meta.region_name, fallback)
        return known

    def get_session_token(self, profile: str, keys: StaticKeys, duration: int,
                          serial: str | None, code: str | None, region: str | None,
                          login_profile: str | None = None) -> Credentials:
        # `login_profile` is the profile the user typed, so messages repeat their own command.
        params: dict[str, Any] = {"DurationSeconds": duration}
        if serial:
            params.update(SerialNumber=serial, TokenCode=code or "")
        with translate_errors(login_profile or profile, "GetSessionToken"):
            response = self._client(profile, keys, region).get_session_token(**params)
        return _credentials(response["Credentials"], None)

    def assume_role(self, profile: str, source: SourceSecret, role_arn: str, session_name: str,
                    duration: int, external_id: str | None, region: str | None,
                    serial: str | None = None, code: str | None = None) -> Credentials:
        params: dict[str, Any] = {"RoleArn": role_arn, "RoleSessionName": session_name,
                                  "DurationSeconds": duration}
        if serial:  # the direct strategy: the MFA code goes to AssumeRole itself
            params.update(SerialNumber=serial, TokenCode=code or "")
        if external_id:
            params["ExternalId"] = external_id
        # Temporary keys from the files (or a helper) end on their own: their owner renews them.
        temporary_keys = isinstance(source, StaticKeys) and source.temporary
        with translate_errors(profile, "AssumeRole", temporary_keys):
            response = self._client(profile, source, region).assume_role(**params)
        account = role_arn.split(":")[4]
        return _credentials(response["Credentials"], account)

    def resolve_source(self, profile: str, credential_source: str | None = None) -> SourceSecret:
        """Credentials botocore finds for a profile by other means (SSO, credential_process...),
        or a role profile's `credential_source`."""
        try:
            if credential_source is not None:
                resolved = _credential_source_provider(credential_source).load()
            else:
                resolved = _profile_credentials(new_botocore_session(self.files, profile), profile)
        except Exception as exc:  # a helper's output is never echoed: it may hold a secret
            raise ProfileConfigError(
                f"profile {profile!r}: botocore could not load its credentials ({type(exc).__name__}); "
                "run its credential_process by hand, or `aws sso login`, to see why") from None
        if resolved is None:
            raise ProfileConfigError(f"profile {profile!r} has no credentials botocore can find; "
                                     "give it keys, credential_process or sso settings")
        frozen = resolved.get_frozen_credentials()
        expiry = getattr(resolved, "_expiry_time", None)
        if frozen.token and expiry is not None:
            return Credentials(frozen.access_key, frozen.secret_key, frozen.token, expiry.timestamp())
        return StaticKeys(frozen.access_key, frozen.secret_key, frozen.token or None)


def sts_session(files: ConfigFiles) -> botocore.session.Session:
    """The botocore session STS clients are made from. It makes STS clients and nothing else
    (never an SSO or other client: every client it makes is given its keys), so its data
    loader (broker/sts_loader.py) knows STS alone: no listing of every service, and an
    endpoints table with STS's endpoints and no other service's."""
    from .sts_loader import loader_for

    session = new_botocore_session(files)
    session.register_component("data_loader", loader_for(session.get_config_variable("data_path")))
    return session


def _profile_credentials(session: botocore.session.Session, profile: str) -> Any:
    """A source profile's credentials as botocore's AssumeRoleProvider finds them: its
    profile providers in botocore's order (web identity, SSO, credentials file, process,
    config file), never the environment's keys."""
    import botocore.credentials as providers

    chain = providers.ProfileProviderBuilder(session).providers(profile_name=profile, disable_env_vars=True)
    return providers.CredentialResolver(chain).load_credentials()


def _credential_source_provider(name: str) -> Any:
    # The same providers botocore uses for `credential_source` in a profile.
    import botocore.credentials as providers
    import botocore.utils

    if name == "Environment":
        return providers.EnvProvider()
    if name == "EcsContainer":
        return providers.ContainerProvider()
    return providers.InstanceMetadataProvider(
        iam_role_fetcher=botocore.utils.InstanceMetadataFetcher(timeout=2, num_attempts=1))


def _credentials(raw: dict[str, Any], account: str | None) -> Credentials:
    return Credentials(
        access_key_id=raw["AccessKeyId"],
        secret_access_key=raw["SecretAccessKey"],
        session_token=raw["SessionToken"],
        expiration=raw["Expiration"].timestamp(),
        account_id=account,
    )


class translate_errors:
    """Turns botocore's exceptions into BrokerErrors with plain-words messages."""

    def __init__(self, profile: str, action: str, temporary_keys: bool = False) -> None:
        self.profile = profile
        self.action = action
        self.temporary_keys = temporary_keys

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> Literal[False]:
        if exc is None:
            return False
        translated = self.translate(exc)
        if translated is None:
            return False
        log.info("STS %s for profile %s failed: %s", self.action, self.profile, translated.code)
        raise translated from None

    def translate(self, exc: BaseException) -> BrokerError | None:
        import botocore.exceptions  # loaded already: the exception came from botocore

        profile, action = self.profile, self.action
        if isinstance(exc, botocore.exceptions.ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "Unknown"))
            message = str(error.get("Message", "")).strip()
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if code == "AccessDenied" and "unable to validate MFA code" in message:
                return MfaCodeRejected(
                    f"STS could not check the MFA code for profile {profile!r} ({message}) STS checks a code "
                    "only against the IAM user whose long-term keys sign the call: check mfa_serial, and put it "
                    "on the profile whose source_profile holds that user's keys."
                )
            if code == "AccessDenied" and "MultiFactorAuthentication" in message:
                return MfaCodeRejected(
                    f"STS rejected the MFA code ({message}) Each code works once: wait for the next "
                    f"code and {login_hint(profile)} again."
                )
            if self.temporary_keys and (code == "ExpiredToken" or code in BAD_KEY_CODES):
                return StsDenied(
                    f"STS does not accept the temporary keys behind profile {profile!r} ({code}): their "
                    "aws_session_token has ended or does not match; renew them with the tool that wrote "
                    "them (saml2aws, aws-azure-login, gimme-aws-creds, `aws configure set`)"
                )
            if code == "ExpiredToken":
                return LoginRequired(f"the MFA session behind profile {profile!r} has ended: {login_hint(profile)}")
            if code in BAD_KEY_CODES:
                return StsDenied(
                    f"STS does not accept the keys behind profile {profile!r} ({code}): check "
                    "aws_access_key_id and aws_secret_access_key in your credentials file"
                )
            if code == "ValidationError":
                return ProfileConfigError(f"STS refused {action} for profile {profile!r}: {message}")
            if code == "RegionDisabledException":
                return StsDenied(f"STS is not enabled in the region of profile {profile!r}: {message} "
                                 "Enable the region or set another `region` for the profile.")
            if code in TRANSIENT_CODES or status >= 500 or status == 429:
                return StsUnavailable(f"STS is having trouble ({code}): the broker retries by itself")
            return StsDenied(f"STS refused {action} for profile {profile!r}: {code}: {message}")
        if isinstance(exc, (botocore.exceptions.EndpointConnectionError,
                            botocore.exceptions.ConnectTimeoutError,
                            botocore.exceptions.ReadTimeoutError,
                            botocore.exceptions.ConnectionClosedError)):
            return StsUnavailable(f"cannot reach STS for profile {profile!r} ({type(exc).__name__}): "
                                  "check the network; the broker retries by itself")
        if isinstance(exc, botocore.exceptions.ParamValidationError):
            return ProfileConfigError(f"{action} for profile {profile!r} was not sent: a setting is out of "
                                      "shape (an MFA code is six digits; check role_arn, external_id, "
                                      "role_session_name)")
        if isinstance(exc, botocore.exceptions.BotoCoreError):
            return StsUnavailable(f"STS call for profile {profile!r} failed ({type(exc).__name__})")
        return None
