"""Errors a user can act on. Each carries a stable code, an HTTP status for the
endpoint, and a message that says what happened and what to do. Messages never
contain a key, a token or a client token."""

from __future__ import annotations

import shlex


class BrokerError(Exception):
    code = "BrokerError"
    status = 500
    # Transient errors are retried by the daemon and by SDKs (503); the others need the user.
    transient = False

    def __init__(self, message: str, retry_at: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        # When the daemon should try again, if the error itself knows (else: backoff).
        self.retry_at = retry_at


class UnknownProfile(BrokerError):
    code = "UnknownProfile"
    status = 403


class ProfileConfigError(BrokerError):
    code = "ProfileConfigError"
    status = 403


class MfaProcessFailed(ProfileConfigError):
    """mfa_process did not give a code (it failed, hung or printed something else)."""


class LoginRequired(BrokerError):
    code = "LoginRequired"
    status = 403


class MfaCodeRejected(BrokerError):
    code = "MfaCodeRejected"
    status = 403


class StsDenied(BrokerError):
    """STS refused for a reason only the user (or an administrator) can fix."""

    code = "StsDenied"
    status = 403


class StsUnavailable(BrokerError):
    code = "StsUnavailable"
    status = 503
    transient = True


class MfaCodeNotReady(BrokerError):
    """mfa_process printed the code that was just used: the next one comes with the next window."""

    code = "MfaCodeNotReady"
    status = 503
    transient = True


class CredentialsPending(BrokerError):
    """Nothing cached yet and the STS call is still running: the SDK's retry will be served."""

    code = "CredentialsPending"
    status = 503
    transient = True


def login_hint(profile: str) -> str:
    # Quoted as a shell needs it: botocore's profile names may hold spaces.
    return f"run `rolebroker login {shlex.quote(profile)}`"
