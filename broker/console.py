"""AWS console sign-in from a profile's role credentials (`rolebroker console`).

The daemon does the federation call itself and hands the CLI only the sign-in URL: the
role's secret key never leaves the daemon for this. What STS allows, and what is said:
- Credentials from GetSessionToken cannot sign in: the federation endpoint takes role
  (AssumeRole) credentials, so a profile served the MFA session itself is refused.
- `SessionDuration` (900-43200 s) is allowed only for a role assumed with an IAM user's
  long-term keys (the direct strategy, or keys with no MFA); a role assumed from an MFA
  session or another role (role chaining) gets a console session of at most one hour.
- Each partition has its own sign-in and console hosts; ROLEBROKER_SIGNIN_URL names
  another federation endpoint (tests, or a proxy of your own).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

from .plans import DirectSource, RolePlan, SessionPlan, StaticSource
from .errors import BrokerError, CredentialsPending, StsUnavailable
from .models import Credentials
from .sessions import SessionManager

SIGNIN_URL_VARIABLE = "ROLEBROKER_SIGNIN_URL"
ISSUER = "rolebroker"
MIN_CONSOLE_SECONDS = 900
MAX_CONSOLE_SECONDS = 43200
CHAINED_CONSOLE_SECONDS = 3600
FEDERATION_TIMEOUT = 10.0
# A sign-in token answer is ~1 KB; anything much larger is not the federation endpoint.
MAX_ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True)
class Partition:
    signin: str
    console: str
    default_region: str


PARTITIONS = {
    "aws": Partition("https://signin.aws.amazon.com/federation", "https://console.aws.amazon.com", "us-east-1"),
    "aws-cn": Partition("https://signin.amazonaws.cn/federation", "https://console.amazonaws.cn", "cn-north-1"),
    "aws-us-gov": Partition("https://signin.amazonaws-us-gov.com/federation",
                            "https://console.amazonaws-us-gov.com", "us-gov-west-1"),
}


class ConsoleRefused(BrokerError):
    code = "ConsoleSignInRefused"
    status = 400


def partition_of(role_arn: str) -> str:
    name = role_arn.split(":")[1] if role_arn.count(":") >= 2 else "aws"
    return name if name in PARTITIONS else "aws"


def destination(partition: str, region: str | None) -> str:
    where = PARTITIONS[partition]
    return f"{where.console}/console/home?region={urllib.parse.quote(region or where.default_region, safe='')}"


# The hosts a role's secret may be sent to for a sign-in token: AWS's own sign-in hosts in
# every partition (the global one, and the regional `eu-west-1.signin.aws.amazon.com`).
SIGNIN_HOSTS = re.compile(r"^(?:[a-z0-9-]+\.)?signin\.(?:aws\.amazon\.com|amazonaws\.cn|amazonaws-us-gov\.com)$")


def signin_endpoint(partition: str, override: str | None) -> str:
    """The federation endpoint: the partition's own, unless one is named. A named one gets the
    role's secret key, so it must be AWS's sign-in over https, or this machine (tests)."""
    chosen = override or os.environ.get(SIGNIN_URL_VARIABLE) or PARTITIONS[partition].signin
    import ipaddress  # only here, as in server.check_listen_address: start-up need not load it

    try:
        parsed = urllib.parse.urlsplit(chosen)
        port = parsed.port  # raises for a port that is not a number or out of range
    except ValueError:  # "http://[::1", "https://host:abc/": not a URL at all
        parsed, port = urllib.parse.urlsplit(""), None
    host = (parsed.hostname or "").lower()
    try:
        local = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        local = False
    aws = parsed.scheme == "https" and SIGNIN_HOSTS.match(host) is not None and port in (None, 443)
    if not (aws or (local and parsed.scheme in ("http", "https"))) or parsed.query or parsed.fragment \
            or parsed.username is not None:
        raise ConsoleRefused(f"{SIGNIN_URL_VARIABLE} must name AWS's sign-in federation endpoint over https (e.g. "
                             "https://signin.amazonaws.cn/federation), or one on this machine; it gets the role's "
                             "secret key, so nothing else is accepted")
    return chosen


def console_duration(plan: RolePlan, asked: int | None) -> int | None:
    """The SessionDuration to send, or None when STS allows none (role chaining)."""
    signer = plan.source.signer if isinstance(plan.source, DirectSource) else plan.source
    from_keys = isinstance(signer, StaticSource) and not signer.keys.temporary
    if from_keys:
        return asked or CHAINED_CONSOLE_SECONDS
    if asked is not None:
        raise ConsoleRefused(
            f"profile {plan.name!r} gets its role by role chaining (from an MFA session or another role): AWS gives "
            f"such a role a console session of at most 1 hour and lets no SessionDuration be asked; drop --duration, "
            f"or give the profile `rolebroker_strategy = direct` (a code per renewal) for up to 12 hours")
    return None


def fetch_signin_token(endpoint: str, credentials: Credentials, duration: int | None) -> str:
    """getSigninToken (blocking). Errors never carry the URL: its query holds the secret."""
    import urllib.error
    import urllib.request  # only here: the daemon's start-up need not pay for it

    session = json.dumps({"sessionId": credentials.access_key_id, "sessionKey": credentials.secret_access_key,
                          "sessionToken": credentials.session_token})
    query = {"Action": "getSigninToken", "Session": session}
    if duration is not None:
        query["SessionDuration"] = str(duration)
    request = urllib.request.Request(f"{endpoint}?{urllib.parse.urlencode(query)}",
                                     headers={"Accept": "application/json"})
    # No proxies from the daemon's environment: the secret goes to the endpoint and nowhere else.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=FEDERATION_TIMEOUT) as response:
            raw = response.read(MAX_ANSWER_BYTES + 1)
    except urllib.error.HTTPError as exc:
        status = exc.code
        exc.close()
        raise ConsoleRefused(f"the federation endpoint refused the sign-in (HTTP {status}): it takes role "
                             "credentials only, and SessionDuration only for a role assumed with long-term keys"
                             ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StsUnavailable(f"cannot reach the federation endpoint {endpoint} ({type(reason).__name__}): check the "
                             "network and try again") from None
    try:
        token = json.loads(raw[:MAX_ANSWER_BYTES])["SigninToken"]
    except (ValueError, KeyError, TypeError):
        token = None
    if not isinstance(token, str) or not token:
        raise StsUnavailable(f"the federation endpoint {endpoint} answered without a SigninToken")
    return token


def login_url(endpoint: str, token: str, target: str) -> str:
    query = urllib.parse.urlencode({"Action": "login", "Issuer": ISSUER, "Destination": target,
                                    "SigninToken": token})
    return f"{endpoint}?{query}"


async def sign_in(sessions: SessionManager, profile: str, duration: int | None,
                  signin_url: str | None) -> dict[str, Any]:
    """The console sign-in URL for a profile, with what the user should know about it."""
    plan = sessions.plan(profile)
    if isinstance(plan, SessionPlan):
        raise ConsoleRefused(
            f"profile {profile!r} is served the MFA session's own credentials (GetSessionToken), and the AWS "
            "console does not accept those: sign in with a role profile (one with role_arn) instead")
    assert isinstance(plan, RolePlan)
    asked = console_duration(plan, duration)
    partition = partition_of(plan.role_arn)
    endpoint = signin_endpoint(partition, signin_url)
    await sessions.credentials_body(profile)  # logged in, fetched, fresh: or the reason why not
    issued = sessions.cached(profile)
    if issued is None:
        raise CredentialsPending(f"credentials for {profile!r} are being renewed; try again in a second")
    loop = asyncio.get_running_loop()
    token = await loop.run_in_executor(None, fetch_signin_token, endpoint, issued.credentials, asked)
    notes = []
    if asked is None:
        notes.append("the console session lasts at most 1 hour: AWS allows no more for a role assumed from an "
                     "MFA session or another role")
    if not plan.region:
        notes.append(f"no region in the profile: the console opens in {PARTITIONS[partition].default_region}")
    return {"url": login_url(endpoint, token, destination(partition, plan.region)),
            "session_seconds": asked if asked is not None else CHAINED_CONSOLE_SECONDS,
            "valid_for_seconds": 900, "notes": notes}

