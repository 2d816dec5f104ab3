"""Whether the ECS address, http://169.254.170.2 on port 80, reaches this user's daemon.

SDKs that read only AWS_CONTAINER_CREDENTIALS_RELATIVE_URI (Ruby, PHP) always go there. It
is this daemon when it listens there itself (`serve --listen 169.254.170.2:80`, with the
privilege for port 80) or when `rolebroker docker setup` redirects that port to its
link-local listener. Asking is the only way to know both: a HEAD of the very URL an SDK
would fetch, with the token just minted, which only this daemon knows (a 401 means another
program or another user's daemon answers there). Standard library only, bounded in time.
"""

from __future__ import annotations

import socket
from urllib.parse import quote

ECS_ADDRESS = "169.254.170.2"
PROBE_TIMEOUT = 1.0


def is_local_address(address: str = ECS_ADDRESS) -> bool:
    """Whether the address is this machine's (binding it works only then): without it, a
    connection would wander off to the default gateway and wait for the timeout."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind((address, 0))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def reaches_daemon(profile: str, token: str, timeout: float = PROBE_TIMEOUT) -> bool:
    if not is_local_address():
        return False
    import http.client  # only where the address exists: its import costs every `env` call

    connection = http.client.HTTPConnection(ECS_ADDRESS, 80, timeout=timeout)
    try:
        connection.request("HEAD", f"/v1/credentials/{quote(profile, safe='')}/{token}")
        response = connection.getresponse()
        status, kind = response.status, response.getheader("Content-Type", "")
    except (OSError, http.client.HTTPException):
        return False  # nothing there (no address, refused, unreachable, timed out) or not HTTP
    finally:
        connection.close()
    # 200, or the daemon's own 403/503 (not logged in, STS trouble): it knew the token.
    return status in (200, 403, 503) and kind == "application/json"
