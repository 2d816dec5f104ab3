"""Who a peer is, and what was refused from each: one log line per peer per interval.

A flood of bad requests must not become a flood of log lines (a journal filled by another
user hides what matters and costs disk), so refusals are counted per peer and summarised
periodically, never logged one by one.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
from typing import Any
from collections.abc import MutableMapping

log = logging.getLogger("rolebroker.refused")

LOOPBACK = "loopback"
# A connection without an IP peer address (a Unix socket): only processes of users allowed
# into its directory can reach it.
LOCAL_SOCKET = "local socket"
# Beyond this many peers in one interval the rest are counted together: memory stays bounded
# whatever the number of addresses (a LAN segment reaching the link-local listener).
MAX_PEERS_LOGGED = 64
OTHER_PEERS = "other addresses"


@functools.lru_cache(maxsize=256)
def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def peer_of(client: tuple[str, int] | None) -> str:
    """Whom to count a connection or a failure against. Every local process can pick any
    127.x.y.z source address (and ::1), so all of loopback is one peer."""
    if client is None:
        return LOCAL_SOCKET
    return LOOPBACK if is_loopback(client[0]) else client[0]


def scope_peer(scope: MutableMapping[str, Any]) -> str:
    return peer_of(scope.get("client"))


class RefusalLog:
    """Counts what was refused per peer and logs it as one line per peer per `interval`
    seconds (real event-loop time), with the count of each kind and the last detail."""

    def __init__(self, interval: float = 60.0) -> None:
        self.interval = interval
        self._counts: dict[str, dict[str, int]] = {}
        self._details: dict[tuple[str, str], str] = {}
        self._timer: asyncio.TimerHandle | None = None

    def note(self, peer: str, what: str, detail: str = "") -> None:
        counts = self._counts.get(peer)
        if counts is None:
            if len(self._counts) >= MAX_PEERS_LOGGED:
                peer = OTHER_PEERS
            counts = self._counts.setdefault(peer, {})
        counts[what] = counts.get(what, 0) + 1
        if detail:
            self._details[(peer, what)] = detail  # the last one only: bounded, never a list
        if self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(self.interval, self.flush)
            except RuntimeError:  # no loop (a direct call outside the daemon): say it now
                self.flush()

    def flush(self) -> None:
        """Log what was counted since the last flush, one line per peer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        counts, details = self._counts, self._details
        self._counts, self._details = {}, {}
        for peer, kinds in counts.items():
            parts = []
            for what, count in kinds.items():
                detail = details.get((peer, what))
                parts.append(f"{count} {what}" + (f" (last: {detail})" if detail else ""))
            log.warning("refused from %s in the last %g s: %s", peer, self.interval, "; ".join(parts))
