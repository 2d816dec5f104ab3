"""What `rolebroker keys add|import|list|remove` do: an IAM user's long-term keys in the OS keyring.

The secret is typed at a prompt (or piped on stdin), never taken from the command line,
which every local user can read in `ps`. `import` moves keys out of the credentials file:
into the keyring first, read back, and only then out of the file; when the keyring cannot
be used, the file is left exactly as it was. The daemon is told to reload afterwards.
"""

from __future__ import annotations

import argparse
import getpass
import re
import sys
from typing import Any

from ..broker.config import ConfigFiles
from ..broker.keystore import KeyringUnavailable, OsKeyring, read_index, write_index
from ..broker.models import StaticKeys, mask
from ..broker.runtime import state_dir
from .credfile import CredentialsFileError, find_keys, write_without_keys

KEY_ID = re.compile(r"[A-Z0-9]{16,128}")


def run(args: argparse.Namespace) -> int:
    try:
        return int(ACTIONS[args.keys_action](args))
    except KeyringUnavailable as exc:
        print(f"rolebroker: {exc}", file=sys.stderr)
        return 1
    except CredentialsFileError as exc:
        print(f"rolebroker: {exc}", file=sys.stderr)
        return 1


# ---- add / import / remove -----------------------------------------------------------------

def _prompt(label: str, secret: bool) -> str:
    """One line from the terminal (the secret unechoed), or from a pipe (a password manager)."""
    if sys.stdin.isatty():
        if secret:
            return getpass.getpass(f"{label}: ")
        print(f"{label}: ", end="", file=sys.stderr, flush=True)  # stdout stays for output
    return sys.stdin.readline().strip()


def cmd_add(args: argparse.Namespace) -> int:
    store = OsKeyring()
    store.describe()  # no usable keyring: say so before anything is typed
    key_id = _prompt("AWS access key ID", secret=False).strip()
    if not KEY_ID.fullmatch(key_id):
        print("rolebroker: an access key ID is 16-128 capital letters and digits (AKIA...)", file=sys.stderr)
        return 1
    if key_id.startswith("ASIA"):
        print("rolebroker: ASIA... keys are temporary (they need a session token and expire): only an IAM user's "
              "long-term keys (AKIA...) belong in the keyring", file=sys.stderr)
        return 1
    secret = _prompt("AWS secret access key", secret=True).strip()
    if not secret or any(c.isspace() or not c.isprintable() for c in secret):
        print("rolebroker: the secret access key is empty or holds spaces or control characters", file=sys.stderr)
        return 1
    store.set_keys(args.profile, StaticKeys(key_id, secret))
    _remember(args.profile, True)
    print(f"Stored the keys of {args.profile} ({mask(key_id)}) in the keyring ({store.describe()}).")
    files = ConfigFiles.from_environment()
    if find_keys(files.credentials_file, args.profile) is not None:
        print(f"note: {files.credentials_file} also holds keys for [{args.profile}], and they win: "
              f"`rolebroker keys import {args.profile}` removes them from the file", file=sys.stderr)
    _reload_daemon()
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    files = ConfigFiles.from_environment()
    found = find_keys(files.credentials_file, args.profile)
    if found is None:
        print(f"rolebroker: {files.credentials_file} has no keys for [{args.profile}]; `rolebroker keys list` shows "
              f"where keys are (or `rolebroker keys add {args.profile}` to type them)", file=sys.stderr)
        return 1
    if found.session_token:
        print(f"rolebroker: [{args.profile}] in {files.credentials_file} holds temporary keys (aws_session_token): "
              "they expire and are rewritten by the tool that made them, so they stay in the file", file=sys.stderr)
        return 1
    store = OsKeyring()
    store.describe()  # refused here, before anything changes, when there is no usable keyring
    keys = StaticKeys(found.key_id, found.secret)
    previous = store.get_keys(args.profile)
    store.set_keys(args.profile, keys)
    if store.get_keys(args.profile) != keys:
        _restore(store, args.profile, previous)
        print("rolebroker: the keyring did not give the keys back as stored; the credentials file is unchanged",
              file=sys.stderr)
        return 1
    # Listed before the file changes: a daemon that reloads in between still finds the keys.
    listed = args.profile in read_index(state_dir())
    _remember(args.profile, True)
    try:
        write_without_keys(found)
    except CredentialsFileError:
        _remember(args.profile, listed)
        _restore(store, args.profile, previous)
        raise
    print(f"Moved the keys of {args.profile} ({mask(found.key_id)}) from {files.credentials_file} into the keyring "
          f"({store.describe()}); every other line of the file is as it was.")
    _reload_daemon()
    return 0


def _restore(store: OsKeyring, profile: str, previous: StaticKeys | None) -> None:
    if previous is None:
        store.delete_keys(profile)
    else:
        store.set_keys(profile, previous)


def cmd_remove(args: argparse.Namespace) -> int:
    store = OsKeyring()
    removed = store.delete_keys(args.profile)
    known = args.profile in read_index(state_dir())
    _remember(args.profile, False)
    if not removed:
        print(f"rolebroker: the keyring holds no keys for {args.profile}"
              f"{' (forgotten from the list)' if known else ''}", file=sys.stderr)
        return 1
    print(f"Removed the keys of {args.profile} from the keyring.")
    if find_keys(ConfigFiles.from_environment().credentials_file, args.profile) is None:
        print(f"note: {args.profile} now has no keys: profiles using it fail until `rolebroker keys add "
              f"{args.profile}`", file=sys.stderr)
    _reload_daemon()
    return 0


def _remember(profile: str, present: bool) -> None:
    directory = state_dir()
    names = set(read_index(directory))
    if (profile in names) != present:
        write_index(directory, frozenset(names | {profile} if present else names - {profile}))


def _reload_daemon() -> None:
    """A running daemon re-reads its config now (its file watcher would within seconds)."""
    from .daemon_client import DaemonClient, DaemonError

    try:
        DaemonClient(timeout=10).request("POST", "/v1/reload")
    except DaemonError:
        pass  # not running: it reads everything when it starts


# ---- list ----------------------------------------------------------------------------------

def _file_keys(files: ConfigFiles) -> dict[str, str]:
    """Profiles with long-term keys in the AWS files, as botocore reads them: name -> key id."""
    from ..broker.config import load_config  # botocore: only for this listing
    from ..broker.configfiles import ConfigFileError

    try:
        profiles = load_config(files).raw_profiles
    except ConfigFileError as exc:
        print(f"rolebroker: {exc}", file=sys.stderr)
        return {}
    return {name: str(section["aws_access_key_id"]) for name, section in profiles.items()
            if section.get("aws_access_key_id") and section.get("aws_secret_access_key")
            and not section.get("aws_session_token")}


def cmd_list(args: argparse.Namespace) -> int:
    files = ConfigFiles.from_environment()
    in_files = _file_keys(files)
    rows: list[tuple[str, str, str]] = []
    problem = None
    in_keyring: dict[str, str] = {}
    names = read_index(state_dir())
    if names:
        try:
            store = OsKeyring()
            for name in sorted(names):
                keys = store.get_keys(name)
                if keys is not None:
                    in_keyring[name] = keys.access_key_id
        except KeyringUnavailable as exc:
            problem = str(exc)
    for name in sorted(set(in_files) | set(in_keyring)):
        if name in in_files and name in in_keyring:
            where = (f"the AWS files (the file's are used); the keyring holds {mask(in_keyring[name])} too: "
                     f"`rolebroker keys import {name}` or `keys remove {name}`")
        elif name in in_keyring:
            where = "keyring"
        else:
            where = f"the AWS files (`rolebroker keys import {name}` moves them)"
        rows.append((name, mask(in_files.get(name) or in_keyring[name]), where))
    for name in sorted(names - set(in_keyring)):
        if problem is None:
            rows.append((name, "-", "listed, but no longer in the keyring (`rolebroker keys add` or `remove`)"))
    if rows:
        width = max(len("PROFILE"), *(len(r[0]) for r in rows))
        print(f"{'PROFILE':{width}}  {'ACCESS KEY':10}  STORED IN")
        for name, key, where in rows:
            print(f"{name:{width}}  {key:10}  {where}")
    else:
        print("(no long-term keys in the keyring or the AWS files)")
    if problem is not None:
        print(f"rolebroker: the keyring could not be read: {problem}", file=sys.stderr)
        return 1
    return 0


ACTIONS: dict[str, Any] = {"add": cmd_add, "import": cmd_import, "list": cmd_list, "remove": cmd_remove}
