"""Taking a profile's keys out of the AWS credentials file, as text.

The file is the user's: its comments, blank lines, order, other profiles and line endings
are kept byte for byte; only the lines of `aws_access_key_id` and `aws_secret_access_key`
(with any continuation lines of theirs) in that one section go. Lines are found the way
configparser (botocore's reader) finds them, and the result is checked against
configparser before anything is written: the values found must be the ones it reads, and
afterwards every other setting must read exactly as before. The new file replaces the old
one atomically (a temporary file in the same directory, fsynced, renamed), with the old
file's mode; a symbolic link (a dotfile manager's) keeps pointing at the edited file.
"""

from __future__ import annotations

import configparser
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ..broker.configfiles import ConfigFileError, open_checked
from ..broker.runtime import write_atomic

KEY_OPTIONS = ("aws_access_key_id", "aws_secret_access_key")
# configparser's own patterns (RawConfigParser.SECTCRE / OPTCRE), on the stripped line.
SECTION = re.compile(r"\[(?P<header>.+)\]")
OPTION = re.compile(r"(?P<option>.*?)\s*(?P<vi>[=:])\s*(?P<value>.*)$")
COMMENT_PREFIXES = ("#", ";")


class CredentialsFileError(Exception):
    """The file cannot be edited safely; the message says why. Nothing was changed."""


@dataclass
class FoundKeys:
    path: str
    text: str = field(repr=False)
    key_id: str
    secret: str = field(repr=False)
    session_token: bool
    remove: list[int] = field(default_factory=list)  # line numbers (0-based) to drop


def _parse(text: str, path: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=path)
    except configparser.Error as exc:
        raise CredentialsFileError(f"{path} does not parse ({type(exc).__name__}): fix it first") from None
    return parser


def _read(path: str) -> str | None:
    """The file's text, read the way the daemon reads it (a FIFO or a device where the file
    should be is refused, never waited on); None when there is no file."""
    try:
        fd = open_checked(path)
    except ConfigFileError as exc:
        raise CredentialsFileError(str(exc)) from None
    if fd is None:
        return None
    try:
        with os.fdopen(fd, "rb") as handle:
            return handle.read().decode("utf-8")  # open_checked checked the size and the encoding
    except OSError as exc:
        raise CredentialsFileError(f"cannot read {path}: {exc.strerror}") from None


def find_keys(path: str, profile: str) -> FoundKeys | None:
    """The profile's keys in the credentials file at `path`, with the lines that hold them
    (None: the file or the section has no keys)."""
    text = _read(path)
    if text is None:
        return None
    lines = text.splitlines(keepends=True)
    section: str | None = None
    option: str | None = None  # the option the next indented lines continue
    indent = 0
    held: dict[str, list[int]] = {}
    for number, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith(COMMENT_PREFIXES):
            continue  # neither ends a value in configparser: a deeper-indented line after them continues it
        level = len(line) - len(line.lstrip())
        if option is not None and level > indent:
            if section == profile and option in KEY_OPTIONS:
                held.setdefault(option, []).append(number)
            continue
        option = None
        header = SECTION.match(stripped)
        if header:
            section = header.group("header")
            continue
        match = OPTION.match(stripped)
        if match and section is not None:
            option, indent = match.group("option").rstrip().lower(), level
            if section == profile and option in KEY_OPTIONS:
                held.setdefault(option, []).append(number)
    parser = _parse(text, path)
    if not parser.has_section(profile):
        return None
    values = {name: parser.get(profile, name, fallback=None) for name in KEY_OPTIONS}
    if not any(values.values()):
        return None
    key_id, secret = (values[name] or "" for name in KEY_OPTIONS)
    if not key_id.strip() or not secret.strip():
        raise CredentialsFileError(f"[{profile}] in {path} has only one of aws_access_key_id and "
                                   "aws_secret_access_key: complete or remove it first")
    remove = sorted(n for numbers in held.values() for n in numbers)
    found = FoundKeys(path, text, key_id.strip(), secret.strip(),
                      parser.has_option(profile, "aws_session_token"), remove)
    _check_removal(found, parser, profile)
    return found


def without_keys(found: FoundKeys) -> str:
    lines = found.text.splitlines(keepends=True)
    drop = set(found.remove)
    return "".join(line for number, line in enumerate(lines) if number not in drop)


def _check_removal(found: FoundKeys, before: configparser.RawConfigParser, profile: str) -> None:
    """Refuse unless the edited text reads exactly as the file, minus the two keys."""
    after = _parse(without_keys(found), found.path)
    expected = {name: dict(before.items(name)) for name in before.sections()}
    for name in KEY_OPTIONS:
        expected[profile].pop(name, None)
    actual = {name: dict(after.items(name)) for name in after.sections()}
    if actual != expected or dict(before.defaults()) != dict(after.defaults()):
        raise CredentialsFileError(f"the keys of [{profile}] in {found.path} are laid out in a way rolebroker "
                                   "cannot remove safely (a duplicate key?): move them with `rolebroker keys add` "
                                   "and delete the two lines yourself")


def write_without_keys(found: FoundKeys) -> None:
    """Replace the file with its text minus the keys, unless it changed since it was read."""
    real = os.path.realpath(found.path)  # through a dotfile manager's link, to the file itself
    try:
        mode = stat.S_IMODE(os.stat(real).st_mode)
    except OSError as exc:
        raise CredentialsFileError(f"cannot read {found.path}: {exc.strerror}") from None
    if _read(real) != found.text:
        raise CredentialsFileError(f"{found.path} changed while rolebroker was reading it: run the command again")
    try:
        write_atomic(Path(real), without_keys(found).encode("utf-8"), mode=mode, durable=True)
    except OSError as exc:
        raise CredentialsFileError(f"cannot write {found.path}: {exc.strerror}; it is unchanged") from None
