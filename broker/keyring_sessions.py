"""What the daemon asks of the OS keyring: a source profile's long-term keys when a call
needs them, and the opt-in MFA session cache (`rolebroker_session_cache = keyring`).

Every call goes through the KeyringWorker (off the event loop, with a deadline) and comes
back either as a value or as a BrokerError whose message says what to install, start or
unlock. The cache trades a little for a lot: the MFA session's credentials sit in the
keyring (encrypted by it, readable by your own processes while it is unlocked) for the
session's lifetime, so a daemon restart, an upgrade or a reboot costs no new code.
"""

from __future__ import annotations

import logging
import shlex
import sys

from .plans import KeyringKeys, LongTermKeys, MfaSessionKey
from .errors import BrokerError, ProfileConfigError
from .keystore import SERVICE, KeyringUnavailable, KeyringWorker, KeyStore, OsKeyring, session_item
from .models import Credentials, StaticKeys

log = logging.getLogger("rolebroker.keyring")


class KeyringError(BrokerError):
    """The keyring could not be used: only the user can fix it (install, start, unlock)."""

    code = "KeyringUnavailable"
    status = 403


def cache_name(key: MfaSessionKey) -> str:
    return f"{key.source_profile}|{key.mfa_serial or '-'}"


class DaemonKeyring:
    def __init__(self, store: KeyStore | None = None, timeout: float | None = None) -> None:
        self.worker = KeyringWorker(store or OsKeyring())
        if timeout is not None:
            self.worker.timeout = timeout

    def close(self) -> None:
        self.worker.close()

    async def keys(self, keys: LongTermKeys, profile: str) -> StaticKeys:
        """The keys themselves: as they are when they came from a file, else the keyring's."""
        if isinstance(keys, StaticKeys):
            return keys
        assert isinstance(keys, KeyringKeys)
        name = keys.profile
        try:
            found = await self.worker.call(lambda store: store.get_keys(name))
        except KeyringUnavailable as exc:
            raise KeyringError(f"profile {profile!r}: the keys of {name!r} are in the OS keyring, which cannot be "
                               f"used now: {exc}") from None
        if found is None:
            raise ProfileConfigError(f"profile {profile!r}: the OS keyring no longer holds the keys of {name!r}: "
                                     f"run `rolebroker keys add {name}`, or put them back in the credentials file")
        return found

    async def load_session(self, key: MfaSessionKey) -> Credentials | None:
        name = cache_name(key)
        try:
            return await self.worker.call(lambda store: store.get_session(name))
        except KeyringUnavailable as exc:
            log.warning("MFA session %s: not read from the keyring: %s", key.label(), exc)
            return None

    async def save_session(self, key: MfaSessionKey, credentials: Credentials) -> None:
        name = cache_name(key)
        try:
            await self.worker.call(lambda store: store.set_session(name, credentials))
        except KeyringUnavailable as exc:
            # The session works all the same; it just will not outlive this daemon.
            log.warning("MFA session %s: not kept in the keyring (a restart will need a new code): %s",
                        key.label(), exc)

    async def drop_session(self, key: MfaSessionKey) -> str | None:
        """Forget a cached session; what went wrong, for the user who logged out (None: gone)."""
        name = cache_name(key)
        try:
            await self.worker.call(lambda store: store.delete_session(name))
        except KeyringUnavailable as exc:
            item = f"service {SERVICE}, account {session_item(name)}"
            if sys.platform.startswith("linux"):
                item = f"`secret-tool clear service {SERVICE} username {shlex.quote(session_item(name))}`"
            problem = (f"MFA session {key.label()} may still be in the OS keyring: it could not be removed ({exc}). "
                       "A daemon started before it expires would use it again: run `rolebroker logout` again once "
                       f"the keyring is available, or remove it with your keyring's own tool ({item})")
            log.warning("%s", problem)
            return problem
        return None
