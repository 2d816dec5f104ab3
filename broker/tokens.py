"""Client tokens: who may fetch which profile's credentials.

Only SHA-256 digests are kept, in memory and in a 0600 file, so tokens survive a
daemon restart while the file alone grants nothing. A presented token is hashed and
looked up by digest: the lookup's timing depends on the digest, never on how much of
the token an attacker guessed right.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import hmac
import logging
import math
import os
import re
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from collections.abc import Callable
from typing import Any, TypeVar, cast

from .names import token_name_part
from .runtime import NotDurable, RuntimeDirError, read_json, write_json

log = logging.getLogger("rolebroker.tokens")
T = TypeVar("T")
TOKEN_PREFIX = "rbt_"
NAME = re.compile(r"[A-Za-z0-9_.@:-]{1,64}")
DIGEST = re.compile(r"[0-9a-f]{64}")


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)  # 256 random bits


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True)
class TokenRecord:
    name: str
    digest: str
    profiles: tuple[str, ...]  # empty: every profile
    created_at: float
    expires_at: float | None
    # A process whose end revokes the token (`rolebroker exec`): (pid, start time), see leases.py.
    holder: tuple[int, int] | None = None

    def allows(self, profile: str) -> bool:
        return not self.profiles or profile in self.profiles

    def __repr__(self) -> str:
        return f"TokenRecord(name={self.name!r}, profiles={self.profiles!r})"


class TokenRejected(Exception):
    pass


SAVE_TIMEOUT = 10.0


class TokensNotSaved(Exception):
    """The token file could not be written: nothing changed, in memory or on disk (or, past
    the save deadline, the message says the change is not confirmed)."""


class TokenStore:
    """Every change is written to the file before it takes effect in memory: a revoke that
    could not be saved leaves the token valid and says so, rather than revoking it until
    the next restart brings it back."""

    def __init__(self, path: Path | None, now: Callable[[], float],
                 write: Callable[..., None] = write_json) -> None:
        self.path = path
        self.now = now
        self.write_file = write  # the file system: a test may hand in one that hangs
        # The daemon's changes (create_async, revoke_async) one at a time: each saves a whole
        # new set of records, so two at once would lose one of them.
        self._changing = asyncio.Lock()
        self._changes: set[asyncio.Task[Any]] = set()  # running changes, kept from the garbage collector
        # How long a caller waits for a save (a hung network mount): then it is told, and the
        # change still completes, or fails into the log, once the write ends.
        self.save_timeout = SAVE_TIMEOUT
        self._by_digest: dict[str, TokenRecord] = {}
        self.last_used: dict[str, float] = {}
        # What went wrong reading the file at startup, for `rolebroker status`.
        self.problem: str | None = None
        self._frozen = False  # the file could be neither read nor moved aside: never overwrite it
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            data = read_json(path)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:  # ValueError: not JSON, or not UTF-8
            self._set_aside(path, f"cannot be read ({_reason(exc)})", keeps_records=False)
            return
        raws = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(raws, list):
            self._set_aside(path, 'is not a {"tokens": [...]} file', keeps_records=False)
            return
        skipped = 0
        names: set[str] = set()
        for position, raw in enumerate(raws, start=1):
            try:
                record = parse_record(raw)
                if record.digest in self._by_digest or record.name in names:
                    raise ValueError("a second record with the same name or token")
            except ValueError as exc:
                skipped += 1
                log.error("client token record #%d%s in %s skipped: %s", position, _record_label(raw), path, exc)
                continue
            self._by_digest[record.digest] = record
            names.add(record.name)
        if skipped:
            self._set_aside(path, f"had {skipped} unreadable record(s), skipped (see the log)", keeps_records=True)

    def _set_aside(self, path: Path, what: str, keeps_records: bool) -> None:
        """Keep a file we could not read whole under another name, so the next save cannot
        overwrite what it holds. A rename needs no free space, so this works on a full disk."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = path.with_name(f"{path.name}.corrupt-{stamp}")
        for n in range(2, 100):  # never over an earlier copy
            if not aside.exists():
                break
            aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        try:
            os.chmod(path, 0o600)
            os.replace(path, aside)
        except OSError as exc:
            self.problem = (f"{path} {what} and could not be moved aside ({_reason(exc)}): its tokens are not "
                            f"served; move it away yourself, then restart the daemon")
            self._frozen = True  # saving now would overwrite the only copy
            log.error("%s", self.problem)
            return
        kept = "the readable tokens still work; " if keeps_records else "its tokens no longer work: "
        self.problem = (f"{path} {what}: moved aside to {aside}; {kept}"
                        "create new tokens for the clients that lost theirs")
        log.error("%s", self.problem)
        if keeps_records:
            try:
                self._save(self._by_digest)  # a clean file again, with the records that were read
            except TokensNotSaved as exc:
                # Served from memory all the same (the next save writes them); on disk, the copy set
                # aside holds them.
                self.problem += f"; the readable tokens are not saved yet ({exc})"
                log.error("%s", exc)

    def _save(self, records: dict[str, TokenRecord]) -> None:
        if self.path is None:
            return
        if self._frozen:
            raise TokensNotSaved(f"{self.problem}; until then no token can be created or revoked")
        try:
            self.write_file(self.path, {"tokens": [asdict(r) for r in records.values()]}, durable=True)
        except NotDurable as exc:
            # The file holds the change; only the rename's own sync failed. Refusing now would
            # leave memory behind the file.
            log.warning("client tokens saved to %s, but its directory could not be synced (%s): a power cut "
                        "now could undo the change", self.path, _reason(exc))
        except RuntimeDirError as exc:  # the state directory replaced by a symlink, say: it says why
            raise TokensNotSaved(f"could not save the client tokens ({exc}), so nothing was changed") from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                fix = f"the disk holding {self.path.parent} is full: free some space there and try again"
            else:
                fix = f"check {self.path.parent} (it must be a writable directory of yours) and try again"
            raise TokensNotSaved(f"could not save the client tokens to {self.path} ({_reason(exc)}), "
                                 f"so nothing was changed: {fix}") from None

    async def create_async(self, name: str | None, profiles: tuple[str, ...], ttl: float | None,
                           holder: tuple[int, int] | None = None) -> tuple[str, TokenRecord]:
        """A new token, saved before it works (TokensNotSaved: it never existed). The save (an
        fsync: milliseconds, more on a busy disk) runs on a worker thread, so the loop keeps
        serving credentials meanwhile."""
        def make() -> tuple[tuple[str, TokenRecord], dict[str, TokenRecord]]:
            token, record, records = self._with_new(name, profiles, ttl, holder)
            return (token, record), records
        return await self._change_async(make)

    async def _change_async(self, make: Callable[[], tuple[T, dict[str, TokenRecord] | None]]) -> T:
        """One change, off the loop. make() runs under the lock and gives the result and the
        records to save (None: nothing to change). The save and the swap after it run in a task
        of their own, so a caller that is cancelled or stops waiting cannot leave memory and
        file apart, and the next change starts only once this write has ended: an older write
        can never land after a newer one."""
        state = _Change()
        change = asyncio.ensure_future(self._locked_change(make, state))
        self._changes.add(change)
        change.add_done_callback(self._changes.discard)
        try:
            return cast(T, await asyncio.wait_for(asyncio.shield(change), self.save_timeout))
        except TimeoutError:
            state.abandoned = True
            change.add_done_callback(state.report_late)  # nobody else waits for its outcome
            if not state.writing:  # still queued behind another change's write: never made now
                raise TokensNotSaved(
                    f"the client tokens' file {self.path} has been busy with an earlier change for "
                    f"{self.save_timeout:g} s (a hung disk or network mount?), so nothing was changed"
                ) from None
            raise TokensNotSaved(
                f"the disk holding {self.path} did not finish saving the client tokens within "
                f"{self.save_timeout:g} s, so the change is not confirmed: it takes effect once the write ends "
                "(if the daemon stops first, the file decides). Check that file system (a hung network "
                "mount?), then look at `rolebroker token list`"
            ) from None
        except BaseException:  # the caller was cancelled (a shutdown, a client gone)
            state.abandoned = True
            change.add_done_callback(state.report_late)
            raise

    async def _locked_change(self, make: Callable[[], tuple[T, dict[str, TokenRecord] | None]],
                             state: _Change) -> T | None:
        async with self._changing:
            if state.abandoned:
                return None  # its caller gave up before it started: it is not made at all
            result, records = make()
            if records is not None:
                state.writing = True
                await asyncio.to_thread(self._save, records)
                self._swap(records)
            return result

    def _with_new(self, name: str | None, profiles: tuple[str, ...], ttl: float | None,
                  holder: tuple[int, int] | None) -> tuple[str, TokenRecord, dict[str, TokenRecord]]:
        records = self._unexpired()
        if name is None:
            name = f"{token_name_part('-'.join(profiles)) or 'all'}-{secrets.token_hex(3)}"[-64:]
        if not NAME.fullmatch(name):
            raise ValueError("a token name is 1-64 letters, digits and _.@:-")
        if any(r.name == name for r in records.values()):
            raise ValueError(f"a token named {name!r} exists; revoke it first or pick another name")
        token = new_token()
        now = self.now()
        record = TokenRecord(name, digest(token), tuple(sorted(set(profiles))), now,
                             now + ttl if ttl else None, holder)
        records[record.digest] = record
        return token, record, records

    def check(self, token: str) -> TokenRecord:
        """The record of a valid token, else TokenRejected (no hint which way it failed)."""
        record = self.lookup(token.encode("latin-1", "replace"))
        if record is None:
            raise TokenRejected("unknown, revoked or expired token")
        return record

    def lookup(self, token: bytes) -> TokenRecord | None:
        """The hot-path form of `check`: the raw header bytes in, a valid record or None out."""
        presented = hashlib.sha256(token).hexdigest()
        record = self._by_digest.get(presented)
        if record is None or not hmac.compare_digest(record.digest, presented):
            return None
        now = self.now()
        if record.expires_at is not None and now >= record.expires_at:
            return None
        self.last_used[record.name] = now
        return record

    async def revoke_async(self, name: str, digest: str | None = None) -> bool:
        """Whether a token of that name was revoked; saved first, on a worker thread (see
        create_async; TokensNotSaved: it stays valid). With `digest`, only that token: one made
        later under the same name is left alone."""
        def make() -> tuple[bool, dict[str, TokenRecord] | None]:
            records = self._without(name, digest)
            return records is not None, records
        return await self._change_async(make)

    def _without(self, name: str, digest: str | None = None) -> dict[str, TokenRecord] | None:
        records = {d: r for d, r in self._by_digest.items() if r.name != name or (digest is not None and d != digest)}
        return None if len(records) == len(self._by_digest) else records

    def records(self) -> list[TokenRecord]:
        return sorted(self._by_digest.values(), key=lambda r: r.created_at)

    def _unexpired(self) -> dict[str, TokenRecord]:
        now = self.now()
        return {d: r for d, r in self._by_digest.items() if r.expires_at is None or r.expires_at > now}

    def _swap(self, records: dict[str, TokenRecord]) -> None:
        for gone in self._by_digest.keys() - records.keys():
            self.last_used.pop(self._by_digest[gone].name, None)
        self._by_digest = records


class _Change:
    """Where one change is: whether its write has begun, and whether its caller gave up."""

    __slots__ = ("writing", "abandoned")

    def __init__(self) -> None:
        self.writing = False
        self.abandoned = False

    def report_late(self, change: asyncio.Task[Any]) -> None:
        """The outcome of a change nobody waits for any more, for the log."""
        if change.cancelled():
            if self.writing:
                log.warning("a client token change was still being written when the daemon stopped: "
                            "tokens.json decides whether it took effect")
            return
        failure = change.exception()
        if failure is not None:
            log.error("a client token change whose caller had stopped waiting was not made: %s: %s",
                      type(failure).__name__, failure)


def parse_record(raw: object) -> TokenRecord:
    """One record of the token file, checked field by field (ValueError says which)."""
    if not isinstance(raw, dict):
        raise ValueError("not an object")
    name, token_digest, profiles = raw.get("name"), raw.get("digest"), raw.get("profiles")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValueError("name is not a token name")
    if not isinstance(token_digest, str) or not DIGEST.fullmatch(token_digest):
        raise ValueError("digest is not a SHA-256 hex digest")
    if not isinstance(profiles, list) or not all(isinstance(p, str) and p for p in profiles):
        raise ValueError("profiles is not a list of profile names")
    created_at = _timestamp(raw.get("created_at"), "created_at")
    expires_at = None if raw.get("expires_at") is None else _timestamp(raw.get("expires_at"), "expires_at")
    holder = raw.get("holder")
    if holder is not None and not (isinstance(holder, list) and len(holder) == 2
                                   and all(isinstance(v, int) and not isinstance(v, bool) for v in holder)):
        raise ValueError("holder is not [pid, start time]")
    return TokenRecord(name, token_digest, tuple(profiles), created_at, expires_at,
                       (holder[0], holder[1]) if holder is not None else None)


def _timestamp(value: object, field: str) -> float:
    # bool is an int to Python, and NaN compares false with everything: neither is a time.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{field} is not a time in seconds")
    return float(value)


def _record_label(raw: object) -> str:
    """How a log line names a record: its name if it has a sane one (never its digest)."""
    name = raw.get("name") if isinstance(raw, dict) else None
    return f" ({name!r})" if isinstance(name, str) and NAME.fullmatch(name) else ""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return "not JSON" if isinstance(exc, ValueError) else type(exc).__name__
