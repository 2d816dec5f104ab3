"""Whether the ECS address, http://169.254.170.2 on port 80, reaches this user's daemon.

SDKs that read only AWS_CONTAINER_CREDENTIALS_RELATIVE_URI (Ruby, PHP) always go there. It
is this daemon when it listens there itself (`serve --listen 169.254.170.2:80`, with the
privilege for port 80) or when `rolebroker docker setup` redirects that port to its
link-local listener; on a shared machine it may as well be another user's daemon, or anyone
who bound the port the redirect points at. Asking is the only way to know, and the question
carries nothing worth stealing: a challenge from our daemon (over the control channel),
sent in the ECS form's URL, whose answer only our daemon gives (broker/probes.py). Never a
client token. Standard library only, bounded in time.
"""

from __future__ import annotations

import socket
from urllib.parse import quote

TYPE_CHECKING = False  # typing's own flag without typing's import cost (see cli.py)
if TYPE_CHECKING:
    from .daemon_client import DaemonClient

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


def reaches_daemon(client: DaemonClient, profile: str, timeout: float = PROBE_TIMEOUT,
                   address: str = ECS_ADDRESS, port: int = 80) -> bool:
    """`client`: the DaemonClient of this user's daemon (the control channel)."""
    if not is_local_address(address):
        return False
    import hmac  # these only where the address exists: their imports cost every `env` call
    import http.client
    import json

    challenge = client.request("POST", "/v1/probes")
    connection = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        connection.request("GET", f"/v1/credentials/{quote(profile, safe='')}/{challenge['probe']}")
        response = connection.getresponse()
        status, body = response.status, response.read(4096)
    except (OSError, http.client.HTTPException):
        return False  # nothing there (no address, refused, unreachable, timed out) or not HTTP
    finally:
        connection.close()
    try:
        given = json.loads(body).get("probe") if status == 200 else None
    except (ValueError, AttributeError):
        return False
    return isinstance(given, str) and hmac.compare_digest(given.encode(), str(challenge["answer"]).encode())
