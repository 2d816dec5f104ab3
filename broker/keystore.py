"""The OS keyring edge: an IAM user's long-term keys, and (opt-in) MFA sessions, kept by
the `keyring` library (Secret Service on Linux, Keychain on macOS, Credential Locker on
Windows) instead of a plaintext file.

`KeyStore` is the small interface the rest of rolebroker sees; `OsKeyring` implements it
on `keyring`, imported only when first used (a D-Bus library is not something the CLI's
fast paths or the daemon's start-up should pay for). Every call may block (D-Bus, an
unlock prompt): the daemon makes them through `KeyringWorker`, off its event loop.

Which profiles have keys in the keyring is not a secret, and `keyring` cannot list what it
holds: a small index (`keyring-profiles.json` in the state directory, profile names only)
lets the daemon plan its profiles without a D-Bus round trip.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from .models import Credentials, StaticKeys

T = TypeVar("T")

SERVICE = "rolebroker"
INDEX_FILE = "keyring-profiles.json"
# A keyring call that takes longer waits for a human (an unlock prompt nobody answers) or a
# hung D-Bus peer: the caller gets an error, and the daemon keeps serving.
KEYRING_TIMEOUT = 15.0

WHAT_TO_DO = (
    "rolebroker needs an OS keyring it can reach: on Linux a Secret Service (GNOME Keyring: "
    "`apt install gnome-keyring`, or KeePassXC with its Secret Service integration) running in your "
    "D-Bus session and unlocked; on a machine without a desktop start one with "
    "`dbus-run-session -- sh -c 'echo -n PASSWORD | gnome-keyring-daemon --unlock --components=secrets; exec $SHELL'`"
)


class KeyringUnavailable(Exception):
    """No usable keyring (none installed or running, locked, or it gave no answer). The
    message names what to install, start or unlock; it never holds a secret."""


class KeyStore(Protocol):
    def get_keys(self, profile: str) -> StaticKeys | None: ...

    def set_keys(self, profile: str, keys: StaticKeys) -> None: ...

    def delete_keys(self, profile: str) -> bool: ...

    def get_session(self, name: str) -> Credentials | None: ...

    def set_session(self, name: str, credentials: Credentials) -> None: ...

    def delete_session(self, name: str) -> bool: ...

    def describe(self) -> str: ...


def keys_item(profile: str) -> str:
    return f"keys:{profile}"


def session_item(name: str) -> str:
    return f"mfa-session:{name}"


class OsKeyring:
    """KeyStore on the `keyring` library's platform backend."""

    def __init__(self, service: str = SERVICE) -> None:
        self.service = service
        self._backend: Any = None
        self._lock = threading.Lock()

    def _keyring(self) -> Any:
        with self._lock:
            if self._backend is None:
                self._backend = _usable_backend()
            return self._backend

    def describe(self) -> str:
        backend = self._keyring()
        return str(getattr(backend, "name", type(backend).__name__))

    def _get(self, item: str) -> dict[str, Any] | None:
        raw = self._call(lambda backend: backend.get_password(self.service, item))
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise KeyringUnavailable(f"the keyring item {self.service}/{item} is not rolebroker's: "
                                     "remove it with your keyring's own tool (seahorse, secret-tool)")
        return value

    def _set(self, item: str, value: dict[str, Any]) -> None:
        text = json.dumps(value)
        self._call(lambda backend: backend.set_password(self.service, item, text))

    def _delete(self, item: str) -> bool:
        import keyring.errors

        def delete(backend: Any) -> bool:
            try:
                backend.delete_password(self.service, item)
            except keyring.errors.PasswordDeleteError:
                return False  # nothing there
            return True

        return bool(self._call(delete))

    def _call(self, action: Callable[[Any], T]) -> T:
        backend = self._keyring()
        import keyring.errors

        try:
            return action(backend)
        except keyring.errors.KeyringLocked:
            raise KeyringUnavailable("the keyring is locked: unlock it (log in to your desktop, or "
                                     "`echo -n PASSWORD | gnome-keyring-daemon --unlock`) and try again") from None
        except keyring.errors.KeyringError as exc:
            raise KeyringUnavailable(f"the keyring refused ({type(exc).__name__}): {WHAT_TO_DO}") from None
        except Exception as exc:  # D-Bus errors of the backend's own libraries (jeepney, secretstorage)
            raise KeyringUnavailable(f"the keyring could not be reached ({type(exc).__name__}): "
                                     f"{WHAT_TO_DO}") from None

    def get_keys(self, profile: str) -> StaticKeys | None:
        value = self._get(keys_item(profile))
        if value is None:
            return None
        key_id, secret = value.get("aws_access_key_id"), value.get("aws_secret_access_key")
        if not isinstance(key_id, str) or not isinstance(secret, str) or not key_id or not secret:
            raise KeyringUnavailable(f"the keyring item {self.service}/{keys_item(profile)} is incomplete: "
                                     f"run `rolebroker keys add {profile}` again")
        return StaticKeys(key_id, secret)

    def set_keys(self, profile: str, keys: StaticKeys) -> None:
        self._set(keys_item(profile), {"aws_access_key_id": keys.access_key_id,
                                       "aws_secret_access_key": keys.secret_access_key})

    def delete_keys(self, profile: str) -> bool:
        return self._delete(keys_item(profile))

    def get_session(self, name: str) -> Credentials | None:
        value = self._get(session_item(name))
        if value is None:
            return None
        try:
            return Credentials(str(value["AccessKeyId"]), str(value["SecretAccessKey"]),
                               str(value["SessionToken"]), float(value["Expiration"]))
        except (KeyError, TypeError, ValueError):
            return None  # an older or damaged entry: a login replaces it

    def set_session(self, name: str, credentials: Credentials) -> None:
        self._set(session_item(name), {"AccessKeyId": credentials.access_key_id,
                                       "SecretAccessKey": credentials.secret_access_key,
                                       "SessionToken": credentials.session_token,
                                       "Expiration": credentials.expiration})

    def delete_session(self, name: str) -> bool:
        return self._delete(session_item(name))


def _usable_backend() -> Any:
    """The platform keyring `keyring` picks, refused when it is no keyring at all (its "fail"
    and "null" backends), or one that keeps secrets in a plain file (keyrings.alt)."""
    try:
        import keyring
        import keyring.backends.fail
        import keyring.backends.null
    except ImportError:
        raise KeyringUnavailable("the Python package `keyring` is not installed: "
                                 "`pip install keyring` in rolebroker's environment") from None
    try:
        backend = keyring.get_keyring()
    except Exception as exc:  # a broken keyringrc.cfg, a backend that fails to load
        raise KeyringUnavailable(f"no keyring backend could be loaded ({type(exc).__name__}): {WHAT_TO_DO}") from None
    if isinstance(backend, (keyring.backends.fail.Keyring, keyring.backends.null.Keyring)):
        raise KeyringUnavailable(f"no usable OS keyring was found. {WHAT_TO_DO}")
    if type(backend).__module__.startswith("keyrings.alt"):
        raise KeyringUnavailable(f"the keyring backend {type(backend).__name__} keeps secrets in a file, which is "
                                 f"what the keyring is meant to avoid. {WHAT_TO_DO}")
    return backend


class KeyringWorker:
    """Runs KeyStore calls one at a time on a thread of its own, for the event loop.

    One thread, in order: a session written at login and deleted by a logout right after
    reach the keyring in that order. A daemon thread: a call stuck in D-Bus cannot hold up
    the daemon's exit. A call that misses its deadline is reported as KeyringUnavailable;
    the calls queued behind it wait for it, each with a deadline of its own."""

    def __init__(self, store: KeyStore, timeout: float = KEYRING_TIMEOUT) -> None:
        self.store = store
        self.timeout = timeout
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            job()

    def close(self) -> None:
        """End the thread once the calls already queued are done (the daemon is stopping)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread = None

    async def call(self, function: Callable[[KeyStore], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(result: T | None, error: BaseException | None) -> None:
            if future.done():
                return  # the caller stopped waiting (its deadline passed)
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)  # type: ignore[arg-type]

        def job() -> None:
            result, error = None, None
            try:
                result = function(self.store)
            except BaseException as exc:  # handed to the waiter, not lost on this thread
                error = exc
            try:
                loop.call_soon_threadsafe(settle, result, error)
            except RuntimeError:
                pass  # the loop is closed: the daemon stopped meanwhile

        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="rolebroker-keyring", daemon=True)
            self._thread.start()
        self._queue.put(job)
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.timeout)
        except TimeoutError:
            raise KeyringUnavailable(f"the keyring gave no answer within {self.timeout:g} s (is it waiting "
                                     "for you to unlock it?); unlock it and try again") from None


# ---- the index of profiles with keys in the keyring (no secrets) ----------------------------

def index_path(state_dir: Path) -> Path:
    return state_dir / INDEX_FILE


def read_index(state_dir: Path) -> frozenset[str]:
    """Profile names whose keys the keyring holds, as `rolebroker keys` recorded them."""
    try:
        data = json.loads(index_path(state_dir).read_bytes())
    except (OSError, ValueError):
        return frozenset()
    names = data.get("profiles") if isinstance(data, dict) else None
    return frozenset(n for n in names if isinstance(n, str)) if isinstance(names, list) else frozenset()


def write_index(state_dir: Path, profiles: frozenset[str]) -> None:
    from .runtime import ensure_private_dir, write_json

    ensure_private_dir(state_dir)
    write_json(index_path(state_dir), {"profiles": sorted(profiles)})


def keyring_available() -> str | None:
    """Why no keyring can be used here (None: one can). For tests and `keys` to ask first."""
    try:
        OsKeyring().describe()
    except KeyringUnavailable as exc:
        return str(exc)
    return None

