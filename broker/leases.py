"""Client tokens whose life is tied to something besides a clock.

- A token held by a process (`rolebroker exec`) is revoked once that process is gone,
  however it ended: a SIGKILLed `exec` cannot leave a week-long token behind. The holder is
  named by the kernel (the control channel's SO_PEERCRED pid), with the process's start
  time, so a recycled pid does not keep a token alive.
- A token minted for a purpose (`env` for a profile) is handed out again while it has most
  of its life left, so a shell that evals `rolebroker env dev` in every prompt does not pile
  up tokens. Its value is kept in memory only (the file has digests): after a restart the
  next `env` mints a new one.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field

from .tokens import TokenRecord, TokenStore, TokensNotSaved

log = logging.getLogger("rolebroker.tokens")


def process_start(pid: int) -> int | None:
    """The start time of a live process (clock ticks since boot, from /proc), or None if
    there is no such process. Where there is no /proc, any live pid counts, with start 0."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except FileNotFoundError:
        return None
    except OSError:
        return _alive_without_proc(pid)
    # The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    fields = stat[stat.rindex(b")") + 2:].split()
    if fields[0] == b"Z":
        return None  # a zombie has ended; only its parent has not looked yet
    return int(fields[19])  # field 22 of proc(5): starttime


def _alive_without_proc(pid: int) -> int | None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return 0


def holder_of(pid: int) -> tuple[int, int] | None:
    start = process_start(pid)
    return None if start is None else (pid, start)


@dataclass
class _Reusable:
    token: str = field(repr=False)  # a client token's value: never in a repr or a log line
    record: TokenRecord
    ttl: float | None


class TokenLeases:
    def __init__(self, tokens: TokenStore) -> None:
        self.tokens = tokens
        self._reusable: dict[tuple[str, tuple[str, ...]], _Reusable] = {}
        self._minting: dict[tuple[str, tuple[str, ...]], asyncio.Lock] = {}

    def ended(self) -> list[TokenRecord]:
        """The tokens whose holding process has ended. A process whose state cannot be read
        counts as alive: its token is checked again at the next sweep."""
        ended = []
        for record in self.tokens.records():
            if record.holder is None:
                continue
            try:
                start = process_start(record.holder[0])
            except (OSError, ValueError, IndexError):  # an unreadable or unexpected /proc entry
                continue
            if start != record.holder[1]:
                ended.append(record)
        return ended

    async def sweep(self) -> list[str]:
        """Revoke the tokens whose holding process has ended; their names. The saves run off
        the event loop, and each revoke names the token by its digest too: one made under the
        same name meanwhile stays."""
        ended = self.ended()
        for record in ended:
            try:
                if await self.tokens.revoke_async(record.name, record.digest):
                    log.info("token %s revoked: the process holding it has ended", record.name)
            except TokensNotSaved as exc:  # a full disk: the next sweep tries again
                log.error("token %s outlived its process and could not be revoked yet: %s", record.name, exc)
        return [r.name for r in ended]

    def minting(self, purpose: str, profiles: tuple[str, ...]) -> asyncio.Lock:
        """Held from `reuse` to `remember`: callers asking at once (shells opened together) get
        one token between them, not one each."""
        return self._minting.setdefault((purpose, profiles), asyncio.Lock())

    def reuse(self, purpose: str, profiles: tuple[str, ...], ttl: float | None) -> tuple[str, TokenRecord] | None:
        """The token last minted for this purpose, if it is still valid with at least half of
        its life ahead (or no expiry) and was asked with the same lifetime."""
        kept = self._reusable.get((purpose, profiles))
        if kept is None or kept.ttl != ttl:
            return None
        live = {r.name: r for r in self.tokens.records()}.get(kept.record.name)
        if live is None or live.digest != kept.record.digest:
            del self._reusable[(purpose, profiles)]  # revoked, expired and pruned, or replaced
            return None
        if live.expires_at is not None and ttl is not None and live.expires_at - self.tokens.now() < ttl / 2:
            return None
        return kept.token, live

    def remember(self, purpose: str, profiles: tuple[str, ...], ttl: float | None,
                 token: str, record: TokenRecord) -> None:
        self._reusable[(purpose, profiles)] = _Reusable(token, record, ttl)

    def forget_all(self) -> None:
        self._reusable.clear()

    def __repr__(self) -> str:
        return f"TokenLeases({len(self._reusable)} reusable)"
