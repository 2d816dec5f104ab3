"""The ECS port: TCP 169.254.170.2:80 redirected to the daemon's link-local listener.

SDKs that read AWS_CONTAINER_CREDENTIALS_RELATIVE_URI always fetch http://169.254.170.2 on
port 80, and Ruby and PHP (async-aws) read nothing else. Port 80 needs privilege, the
daemon runs as the user: so `rolebroker docker setup`, already the one root step, adds an
nftables DNAT of its own (table `ip rolebroker`), for containers' packets (prerouting) and
for the host's own processes (output), to 169.254.170.2:PORT where the daemon listens. The
daemon stays unprivileged; the rules last until reboot, as the address does.

Standard library only: it drives the `nft` program, and touches no table but its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess

TABLE = "rolebroker"
ECS_ADDRESS = "169.254.170.2"
NFT_TIMEOUT = 30.0


class RedirectError(Exception):
    pass


def nft_program() -> str | None:
    explicit = os.environ.get("ROLEBROKER_NFT")
    if explicit:
        return explicit
    return shutil.which("nft", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


def ruleset(port: int) -> str:
    rule = f"ip daddr {ECS_ADDRESS} tcp dport 80 dnat to {ECS_ADDRESS}:{port}"
    # Declaring the table first makes the delete valid on the first run: one atomic transaction
    # that leaves exactly these rules, however often it runs.
    return (f"table ip {TABLE} {{}}\n"
            f"delete table ip {TABLE}\n"
            f"table ip {TABLE} {{\n"
            f"  chain prerouting {{ type nat hook prerouting priority -100; {rule}; }}\n"
            f"  chain output {{ type nat hook output priority -100; {rule}; }}\n"
            f"}}\n")


def _nft(nft: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([nft, *args], input=stdin if stdin is not None else "", capture_output=True,
                              text=True, timeout=NFT_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise RedirectError(f"`nft {' '.join(args)}` did not finish within {NFT_TIMEOUT:.0f} s") from None


def add(port: int) -> str:
    """Install (or replace) the redirect; what was done, for the report."""
    nft = nft_program()
    if nft is None:
        raise RedirectError("the `nft` program (nftables) is missing, so port 80 is not redirected: Ruby and PHP "
                            "(async-aws) cannot reach the broker. Install it (`sudo apt-get install nftables`) and "
                            "run setup again, or run the daemon with --listen 169.254.170.2:80 as a user allowed "
                            "to bind port 80")
    result = _nft(nft, "-f", "-", stdin=ruleset(port))
    if result.returncode != 0:
        raise RedirectError(f"`nft -f -` failed: {result.stderr.strip() or result.returncode}")
    return f"nft: tcp {ECS_ADDRESS}:80 -> {ECS_ADDRESS}:{port} (table ip {TABLE})"


def remove() -> str | None:
    nft = nft_program()
    if nft is None or _nft(nft, "list", "table", "ip", TABLE).returncode != 0:
        return None
    result = _nft(nft, "delete", "table", "ip", TABLE)
    if result.returncode != 0:
        raise RedirectError(f"`nft delete table ip {TABLE}` failed: {result.stderr.strip()}")
    return f"nft delete table ip {TABLE}"


def target_port() -> int | None:
    """The port the redirect leads to, if it is in place (reading needs root, as nft does)."""
    nft = nft_program()
    if nft is None:
        return None
    result = _nft(nft, "list", "table", "ip", TABLE)
    if result.returncode != 0:
        return None
    marker = f"dnat to {ECS_ADDRESS}:"
    for line in result.stdout.splitlines():
        if marker in line:
            tail = line.split(marker, 1)[1].split()[0]
            return int(tail) if tail.isdigit() else None
    return None
