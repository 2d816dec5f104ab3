"""Taking keys out of the credentials file as text (clients/credfile.py): exactly two
settings go, everything else stays byte for byte, and a layout that cannot be edited
safely is refused with the file untouched. configparser is the oracle throughout."""

from __future__ import annotations

import configparser
import os
from pathlib import Path

import pytest

from rolebroker.clients.credfile import CredentialsFileError, find_keys, write_without_keys

KEY = "AKIAEXAMPLE000000001"
SECRET = "example-secret-0000000000000000000000000"


def edit(tmp_path: Path, text: str, profile: str, newline: str = "") -> str:
    path = tmp_path / "credentials"
    path.write_bytes(text.encode())
    found = find_keys(str(path), profile)
    assert found is not None
    assert (found.key_id, found.secret) == (KEY, SECRET)
    write_without_keys(found)
    return path.read_bytes().decode()


def settings(text: str) -> dict[str, dict[str, str]]:
    parser = configparser.RawConfigParser(interpolation=None)
    parser.read_string(text)
    return {name: dict(parser.items(name)) for name in parser.sections()}


@pytest.mark.parametrize("text, expected", [
    # Comments, other profiles, a final line without a newline.
    (f"# keys\n[dev]\naws_access_key_id = {KEY}\n# kept\naws_secret_access_key = {SECRET}\nregion = x\n"
     f"\n[other]\naws_access_key_id = AKIAOTHER00000000000\naws_secret_access_key = o",
     "# keys\n[dev]\n# kept\nregion = x\n\n[other]\naws_access_key_id = AKIAOTHER00000000000\n"
     "aws_secret_access_key = o"),
    # Windows line endings, upper-case names, the `:` delimiter, no spaces.
    (f"[dev]\r\nAWS_ACCESS_KEY_ID:{KEY}\r\nAws_Secret_Access_Key={SECRET}\r\n\r\n[x]\r\na = b\r\n",
     "[dev]\r\n\r\n[x]\r\na = b\r\n"),
    # A value continued on an indented line goes with its key; a comment between stays.
    (f"[dev]\naws_access_key_id =\n    {KEY}\n; note\naws_secret_access_key = {SECRET}\nb = 1\n",
     "[dev]\n; note\nb = 1\n"),
    # Same names in another section are not touched.
    (f"[dev-old]\naws_access_key_id = {KEY}\naws_secret_access_key = {SECRET}\n"
     f"[dev]\naws_access_key_id = {KEY}\naws_secret_access_key = {SECRET}\n",
     f"[dev-old]\naws_access_key_id = {KEY}\naws_secret_access_key = {SECRET}\n[dev]\n"),
])
def test_only_the_two_keys_go(tmp_path: Path, text: str, expected: str) -> None:
    after = edit(tmp_path, text, "dev")
    assert after == expected
    before = settings(text)
    before["dev"].pop("aws_access_key_id")
    before["dev"].pop("aws_secret_access_key")
    assert settings(after) == before


def test_mode_and_a_dotfile_link_are_kept(tmp_path: Path) -> None:
    target = tmp_path / "dotfiles" / "credentials"
    target.parent.mkdir()
    target.write_text(f"[dev]\naws_access_key_id = {KEY}\naws_secret_access_key = {SECRET}\n")
    target.chmod(0o600)
    link = tmp_path / "credentials"
    link.symlink_to(target)
    found = find_keys(str(link), "dev")
    assert found is not None
    write_without_keys(found)
    assert link.is_symlink() and target.read_text() == "[dev]\n"
    assert target.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["credentials"]  # no temporary file left behind


def test_no_keys_no_section_no_file(tmp_path: Path) -> None:
    path = tmp_path / "credentials"
    assert find_keys(str(path), "dev") is None
    path.write_text("[dev]\nregion = x\n[other]\naws_access_key_id = A\naws_secret_access_key = B\n")
    assert find_keys(str(path), "dev") is None
    assert find_keys(str(path), "missing") is None


@pytest.mark.parametrize("text", [
    f"[dev]\naws_access_key_id = {KEY}\n",  # half a pair
    f"[dev]\naws_access_key_id = {KEY}\naws_secret_access_key = {SECRET}\n[dev]\nx = 1\n",  # does not parse
    "[dev]\nno delimiter line\n",
])
def test_what_cannot_be_edited_safely_is_refused_untouched(tmp_path: Path, text: str) -> None:
    path = tmp_path / "credentials"
    path.write_text(text)
    with pytest.raises(CredentialsFileError) as caught:
        find_keys(str(path), "dev")
    assert SECRET not in str(caught.value)
    assert path.read_text() == text


def test_a_file_changed_meanwhile_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "credentials"
    path.write_text(f"[dev]\naws_access_key_id = {KEY}\naws_secret_access_key = {SECRET}\n")
    found = find_keys(str(path), "dev")
    assert found is not None
    changed = path.read_text() + "[new]\nregion = y\n"
    path.write_text(changed)
    with pytest.raises(CredentialsFileError, match="changed while"):
        write_without_keys(found)
    assert path.read_text() == changed
    assert sorted(os.listdir(tmp_path)) == ["credentials"]


def test_a_fifo_where_the_file_should_be_is_refused_without_waiting(tmp_path: Path) -> None:
    path = tmp_path / "credentials"
    os.mkfifo(path)
    with pytest.raises(CredentialsFileError, match="named pipe"):
        find_keys(str(path), "dev")
