"""The world the STS double judges requests against: IAM users with their MFA devices,
roles, the calls it saw and the credentials it issued, and SigV4 signatures as AWS checks
them. Standard library only, like the double (the demo embeds it)."""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, quote, urlsplit


def totp(secret: bytes, at: float, step: int = 30, digits: int = 6) -> str:
    """RFC 6238 code (HMAC-SHA1, dynamic truncation per RFC 4226) for time `at`."""
    mac = hmac.new(secret, struct.pack(">Q", int(at // step)), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


@dataclass
class MfaDevice:
    serial: str
    # None = demo mode: any 6-digit code is accepted (still single-use).
    totp_secret: bytes | None = field(repr=False)


@dataclass
class IamUser:
    access_key_id: str
    secret_access_key: str = field(repr=False)
    arn: str
    mfa_device: MfaDevice | None = None


@dataclass
class Role:
    arn: str
    max_session_duration: int = 3600
    require_mfa: bool = False
    external_id: str | None = None


@dataclass(frozen=True)
class StsCall:
    """One request as the double saw it. status 0 / error_code "timeout" = held, never answered."""

    action: str
    caller_access_key_id: str
    params: dict[str, str] = field(hash=False)
    status: int
    error_code: str | None

    def __repr__(self) -> str:
        # TokenCode stays in `params` for assertions, but a code that was refused may still
        # be valid for its 30 s window, so it is masked wherever the call gets printed.
        shown = {k: ("******" if k == "TokenCode" else v) for k, v in self.params.items()}
        return (f"StsCall(action={self.action!r}, caller_access_key_id={self.caller_access_key_id!r}, "
                f"params={shown!r}, status={self.status!r}, error_code={self.error_code!r})")


@dataclass(frozen=True)
class IssuedCredential:
    """What the double remembers about temporary credentials it handed out."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)
    kind: Literal["session", "role"]
    expiration: float
    user: IamUser = field(hash=False)
    mfa_authenticated: bool
    role_arn: str | None = None
    session_name: str | None = None
    chain_depth: int = 0  # 0 = GetSessionToken; 1 = role from a user; n+1 = role from a depth-n role
    # A role assumed with the user's long-term keys (not chained): the console federation
    # endpoint allows a SessionDuration only for these.
    from_long_term_keys: bool = False


@dataclass(frozen=True)
class SignedRequest:
    """What a SigV4 signature covers, as received (for `StsDouble.check_signatures`)."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes = field(repr=False)

    def signature_matches(self, authorization: str, secret: str) -> bool:
        """Recompute the AWS4-HMAC-SHA256 signature with `secret` (the SigV4 specification)."""
        fields = dict(part.strip().split("=", 1) for part in authorization[len("AWS4-HMAC-SHA256"):].split(",")
                      if "=" in part)
        try:
            scope = fields["Credential"].split("/", 1)[1]
            date, region, service, _terminal = scope.split("/")
            signed = fields["SignedHeaders"].split(";")
        except (KeyError, IndexError, ValueError):
            return False
        headers: dict[str, list[str]] = {}
        for name, value in self.headers:
            headers.setdefault(name.lower(), []).append(" ".join(value.split()))
        amz_date = ",".join(headers.get("x-amz-date", []))
        url = urlsplit(self.path)
        query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
                         for k, v in sorted(parse_qsl(url.query, keep_blank_values=True)))
        canonical = "\n".join([
            self.method, quote(url.path or "/", safe="/~"), query,
            "".join(f"{name}:{','.join(headers.get(name, []))}\n" for name in signed),
            ";".join(signed), hashlib.sha256(self.body).hexdigest()])
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        key = ("AWS4" + secret).encode()
        for part in (date, region, service, "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, fields.get("Signature", ""))
