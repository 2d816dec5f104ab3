"""A strict AWS STS double speaking the real STS Query protocol over real HTTP.

Used by the test suite and embedded by `--demo` mode, so it is standard library only.
It is stricter than moto where a credential broker can get things wrong: MFA codes
are real RFC 6238 TOTP codes and single-use, role chaining is capped at one hour and
drops the MFA context, temporary credentials expire by the injected clock and must be
presented with their session token. Secrets never appear in a repr, log line or error.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
import string
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from .sts_protocol import (
    BAD_SERIAL, INVALID_CODE, StsError, StsHttpHandler, StsServer, constraint, credentials_xml, duration_param,
    element, error_body, success_body, validation,
)
from .sts_world import IamUser, IssuedCredential, Role, SignedRequest, StsCall, totp

log = logging.getLogger("rolebroker.sts_double")

_KEY_ALPHABET = string.ascii_uppercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits + "+/"
_AUTH_RE = re.compile(r"AWS4-HMAC-SHA256\s+Credential=([A-Za-z0-9]+)/")
# re.ASCII: STS means ASCII word characters, Python's default \w would admit any letter.
_SESSION_NAME_RE = re.compile(r"[\w+=,.@-]*", re.ASCII)
_TOKEN_CODE_RE = re.compile(r"[0-9]{6}")  # not \d: that also matches non-ASCII digits
_CHAINED_MAX = 3600
_TOTP_STEP = 30

_FAULTS: dict[str, tuple[int, str, str]] = {
    "throttling": (400, "Throttling", "Rate exceeded"),
    "server_error": (500, "InternalFailure",
                     "The request processing has failed because of an unknown error, exception or failure."),
    "unavailable": (503, "ServiceUnavailable", "The request has failed due to a temporary failure of the server."),
}
# "slow" holds a request until release_hung(), then answers it normally.
_FAULT_KINDS = frozenset(_FAULTS) | {"timeout", "slow"}

def _rand(n: int, alphabet: str = _KEY_ALPHABET) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def _account(arn: str) -> str:
    parts = arn.split(":")
    return parts[4] if len(parts) > 5 else ""


@dataclass
class _Fault:
    action: str | None
    kind: str
    remaining: int


class StsDouble:
    """An STS endpoint on a local port; see the module docstring for what it enforces."""

    def __init__(self, users: list[IamUser], roles: list[Role], now: Callable[[], float] = time.time,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self._now = now
        self._address = (host, port)
        self._users = {u.access_key_id: u for u in users}
        if len(self._users) != len(users):
            raise ValueError("two users share an access key id")
        self._roles = {r.arn: r for r in roles}
        if bad := [r.arn for r in roles if not 3600 <= r.max_session_duration <= 43200]:
            raise ValueError(f"max_session_duration must be within 3600..43200: {bad}")
        # Stable unique ids, as IAM assigns them once per principal.
        self._user_ids = {u.arn: "AIDA" + _rand(17) for u in users}
        self._role_ids = {r.arn: "AROA" + _rand(17) for r in roles}
        self._issued: dict[str, IssuedCredential] = {}
        self._used_steps: dict[str, set[int]] = {}  # serial -> TOTP time steps already consumed
        self._used_any: dict[str, set[str]] = {}  # serial -> codes consumed on a demo (secret-less) device
        self._accepted: list[str] = []
        self._faults: list[_Fault] = []
        # One lock for all state: request handling is quick, and it makes "single-use" atomic.
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._held = threading.Semaphore(0)  # one permit per request a fault is holding
        self._stopped = False
        # Also check each request's SigV4 signature against the caller's secret key (off by
        # default: most tests are about sessions, not about which secret signed).
        self.check_signatures = False
        self._server: StsServer | None = None
        self._thread: threading.Thread | None = None
        self.calls: list[StsCall] = []

    def start(self) -> StsDouble:
        if self._server is not None or self._stopped:
            raise RuntimeError("StsDouble can be started once")
        server = StsServer(self._address, StsHttpHandler)
        server.double = self
        self._server = server
        # Short poll interval: stop() waits for serve_forever to notice shutdown().
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="sts-double", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._release.set()  # hung requests return now; later ones never wait
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._thread = None
        server.shutdown()
        server.server_close()  # joins handler threads, none of which can block any more
        thread.join()

    def __enter__(self) -> StsDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint_url(self) -> str:
        if self._server is None:
            raise RuntimeError("StsDouble is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def count(self, action: str, *, ok: bool | None = None) -> int:
        with self._lock:
            return sum(1 for c in self.calls
                       if c.action == action and (ok is None or (c.status == 200) == ok))

    def used_codes(self) -> list[str]:
        with self._lock:
            return list(self._accepted)

    def issued(self) -> list[IssuedCredential]:
        """Every temporary credential handed out, oldest first."""
        with self._lock:
            return list(self._issued.values())

    def inject_fault(self, action: str | None, fault: str, times: int = 1) -> None:
        if fault not in _FAULT_KINDS:
            raise ValueError(f"unknown fault {fault!r}; expected one of {sorted(_FAULT_KINDS)}")
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._faults.append(_Fault(action, fault, times))

    def release_hung(self) -> None:
        with self._lock:
            released = self._release
            if not self._stopped:  # after stop() the set event must stay, so late arrivals never hang
                self._release = threading.Event()
        released.set()

    def wait_held(self, timeout: float = 10.0) -> bool:
        """Block until a request is being held by a "timeout" or "slow" fault (a sync point, not a sleep)."""
        return self._held.acquire(timeout=timeout)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, action: str) -> str | None:
        for fault in self._faults:
            if fault.action is None or fault.action == action:
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._faults.remove(fault)
                return fault.kind
        return None

    def answer(self, form: dict[str, str], authorization: str | None,
                token: str | None, signed: SignedRequest | None = None) -> tuple[int, bytes, str] | None:
        """Answer one request: (status, body, request id), or None after a held "timeout"."""
        action = form.get("Action", "")
        # Action/Version are the call itself; X-Amz-* are query-string signing fields (one is a token).
        params = {k: v for k, v in form.items() if k not in ("Action", "Version") and not k.startswith("X-Amz-")}
        match = _AUTH_RE.match(authorization or "")
        key_id = match.group(1) if match else ""
        request_id = str(uuid.uuid4())
        with self._lock:
            fault = self._take_fault(action)
            slow = self._release if fault == "slow" else None
        if slow is not None:
            self._held.release()
            slow.wait()
            fault = None
        with self._lock:
            if fault == "timeout":
                self.calls.append(StsCall(action, key_id, params, 0, "timeout"))
                release = self._release
            else:
                try:
                    if fault is not None:
                        raise StsError(*_FAULTS[fault])
                    if match is None:
                        raise StsError(403, "MissingAuthenticationToken", "Request is missing Authentication Token")
                    user, cred = self._authenticate(key_id, token)
                    if self.check_signatures and signed is not None:
                        secret = cred.secret_access_key if cred is not None else user.secret_access_key
                        if not signed.signature_matches(authorization or "", secret):
                            raise StsError(403, "SignatureDoesNotMatch",
                                            "The request signature we calculated does not match the signature "
                                            "you provided. Check your AWS Secret Access Key and signing method.")
                    result = self._dispatch(action, user, cred, params)
                    status, code = 200, None
                    body = success_body(action, result, request_id)
                except Exception as exc:  # noqa: BLE001 - a bug in the double must still answer, as a 500
                    if not isinstance(exc, StsError):
                        log.exception("sts-double: unexpected error handling %s", action)
                    err = exc if isinstance(exc, StsError) else StsError(500, "InternalFailure", "internal error")
                    status, code = err.status, err.code
                    body = error_body(err, request_id)
                self.calls.append(StsCall(action, key_id, params, status, code))
        if fault == "timeout":
            log.debug("sts-double: holding %s from %s (timeout fault)", action, key_id or "-")
            self._held.release()
            release.wait()
            return None
        log.debug("sts-double: %s from %s -> %d %s", action, key_id or "-", status, code or "OK")
        return status, body.encode(), request_id

    def _authenticate(self, key_id: str, token: str | None) -> tuple[IamUser, IssuedCredential | None]:
        user = self._users.get(key_id)
        if user is not None:
            return user, None
        cred = self._issued.get(key_id)
        if cred is None or not hmac.compare_digest((token or "").encode(), cred.session_token.encode()):
            raise StsError(403, "InvalidClientTokenId", "The security token included in the request is invalid.")
        if self._now() >= cred.expiration:
            raise StsError(400, "ExpiredToken", "The security token included in the request is expired")
        return cred.user, cred

    def _dispatch(self, action: str, user: IamUser, cred: IssuedCredential | None, params: dict[str, str]) -> str:
        if action == "GetSessionToken":
            return self._get_session_token(user, cred, params)
        if action == "AssumeRole":
            return self._assume_role(user, cred, params)
        if action == "GetCallerIdentity":
            arn, user_id = self._identity(user, cred)
            return element("Arn", arn) + element("UserId", user_id) + element("Account", _account(arn))
        raise StsError(400, "InvalidAction", f"Could not find operation {action[:64]} for version 2011-06-15")

    def _identity(self, user: IamUser, cred: IssuedCredential | None) -> tuple[str, str]:
        """(ARN, UserId) of the caller as STS reports it."""
        if cred is None or cred.kind == "session" or cred.role_arn is None:
            return user.arn, self._user_ids[user.arn]
        role_name = cred.role_arn.rsplit("/", 1)[-1]
        arn = f"arn:aws:sts::{_account(cred.role_arn)}:assumed-role/{role_name}/{cred.session_name}"
        return arn, f"{self._role_ids[cred.role_arn]}:{cred.session_name}"

    def _get_session_token(self, user: IamUser, cred: IssuedCredential | None, params: dict[str, str]) -> str:
        if cred is not None:
            raise StsError(403, "AccessDenied", "Cannot call GetSessionToken with session credentials")
        duration = duration_param(params, 43200, 900, 129600)
        mfa = self._check_mfa(user, params)
        return credentials_xml(self._issue("session", user, duration, mfa, None, None, 0))

    def _assume_role(self, user: IamUser, cred: IssuedCredential | None, params: dict[str, str]) -> str:
        role_arn, name = params.get("RoleArn"), params.get("RoleSessionName")
        if not role_arn:
            raise constraint("null", "roleArn", "not be null")
        if name is None or not 2 <= len(name) <= 64:
            shown = "null" if name is None else f"'{name[:80]}'"
            raise constraint(shown, "roleSessionName", "have length between 2 and 64")
        if not _SESSION_NAME_RE.fullmatch(name):
            raise constraint(f"'{name[:80]}'", "roleSessionName", r"satisfy regular expression pattern: [\w+=,.@-]*")
        denied = StsError(403, "AccessDenied", f"User: {self._identity(user, cred)[0]} is not authorized "
                                                f"to perform: sts:AssumeRole on resource: {role_arn}")
        role = self._roles.get(role_arn)
        if role is None:
            raise denied
        duration = duration_param(params, 3600, 900, 43200)
        if cred is not None and duration > _CHAINED_MAX:
            raise validation("The requested DurationSeconds exceeds the 1 hour session limit "
                              "for roles assumed by role chaining.")
        if cred is None and duration > role.max_session_duration:
            raise validation("The requested DurationSeconds exceeds the MaxSessionDuration set for this role.")
        if role.external_id is not None and params.get("ExternalId") != role.external_id:
            raise denied
        if "SerialNumber" in params or "TokenCode" in params:
            if cred is not None:  # the brief's rule: an MFA code on AssumeRole only from long-term keys
                raise StsError(403, "AccessDenied", BAD_SERIAL)
            mfa = self._check_mfa(user, params)
        else:
            # MFA context carries from a GetSessionToken session, never across a role hop.
            mfa = cred is not None and cred.kind == "session" and cred.mfa_authenticated
        if role.require_mfa and not mfa:
            raise denied
        depth = 1 if cred is None else cred.chain_depth + 1
        new = self._issue("role", user, duration, mfa, role.arn, name, depth, from_long_term_keys=cred is None)
        arn, role_id = self._identity(user, new)
        return (credentials_xml(new)
                + f"<AssumedRoleUser>{element('AssumedRoleId', role_id)}{element('Arn', arn)}</AssumedRoleUser>")

    def _check_mfa(self, user: IamUser, params: dict[str, str]) -> bool:
        """Validate and consume SerialNumber/TokenCode; False when neither was sent."""
        serial, code = params.get("SerialNumber"), params.get("TokenCode")
        if serial is None and code is None:
            return False
        if serial is None or code is None:
            raise validation("SerialNumber and TokenCode must be provided together.")
        if not _TOKEN_CODE_RE.fullmatch(code):
            # The refused value is not echoed: it may be a near-miss of a live code.
            raise constraint("(not shown)", "tokenCode", r"satisfy regular expression pattern: [\d]{6}")
        device = user.mfa_device
        if device is None or serial != device.serial:
            raise StsError(403, "AccessDenied", BAD_SERIAL)
        if device.totp_secret is None:
            used_codes = self._used_any.setdefault(serial, set())
            if code in used_codes:
                raise StsError(403, "AccessDenied", INVALID_CODE)
            used_codes.add(code)
        else:
            # Codes are consumed per time step, not per string: a fresh step that happens to
            # repeat an old code (1 in 10^6) is a new one-time password, the same step is not.
            secret, now_step = device.totp_secret, int(self._now() // _TOTP_STEP)
            used_steps = self._used_steps.setdefault(serial, set())
            matched = [s for s in (now_step - 1, now_step, now_step + 1)
                       if s not in used_steps and hmac.compare_digest(totp(secret, s * _TOTP_STEP), code)]
            if not matched:
                raise StsError(403, "AccessDenied", INVALID_CODE)
            used_steps.add(matched[0])
        self._accepted.append(code)
        return True

    def _issue(self, kind: Literal["session", "role"], user: IamUser, duration: int, mfa: bool,
               role_arn: str | None, session_name: str | None, depth: int,
               from_long_term_keys: bool = False) -> IssuedCredential:
        key_id = "ASIA" + _rand(16)
        while key_id in self._issued or key_id in self._users:
            key_id = "ASIA" + _rand(16)
        cred = IssuedCredential(
            access_key_id=key_id, secret_access_key=_rand(40, _SECRET_ALPHABET),
            session_token=secrets.token_urlsafe(192), kind=kind, expiration=self._now() + duration,
            user=user, mfa_authenticated=mfa, role_arn=role_arn, session_name=session_name, chain_depth=depth,
            from_long_term_keys=from_long_term_keys)
        self._issued[key_id] = cred
        return cred
