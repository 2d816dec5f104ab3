"""Profiles from the user's own files, through botocore's loader; a broken profile or
file gets a message naming the file, the profile and the fix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rolebroker.broker.config import ConfigFileError, ConfigFiles, load_config
from rolebroker.broker.plans import (
    BotocoreSource,
    DirectSource,
    RolePlan,
    RoleSource,
    SessionPlan,
    SessionSource,
    StaticSource,
)
from tests.harness import ALICE_KEY, ALICE_SECRET, CONFIG_LAYOUT, CREDENTIALS_LAYOUT, DEV_ROLE, MFA_SERIAL

KEYS = f"aws_access_key_id = {ALICE_KEY}\naws_secret_access_key = {ALICE_SECRET}\n"


def files_with(tmp_path: Path, config: str = "", credentials: str = "") -> ConfigFiles:
    files = ConfigFiles(str(tmp_path / "config"), str(tmp_path / "credentials"))
    Path(files.config_file).write_text(config)
    Path(files.credentials_file).write_text(credentials)
    return files


def test_credentials_file_layout(tmp_path: Path) -> None:
    config = load_config(files_with(tmp_path, CREDENTIALS_LAYOUT["config"], CREDENTIALS_LAYOUT["credentials"]))
    dev = config.plans["dev"]
    assert isinstance(dev, RolePlan) and isinstance(dev.source, SessionSource)
    assert dev.role_arn == DEV_ROLE and dev.region == "eu-west-1"
    assert dev.source.key.mfa_serial == MFA_SERIAL and dev.source.key.source_profile == "default"
    prod = config.plans["prod"]
    assert isinstance(prod, RolePlan) and prod.source.key == dev.source.key  # type: ignore[union-attr]
    assert (prod.requested_duration, prod.duration) == (7200, 3600)
    assert prod.region == "us-east-1"  # inherited from the source profile
    assert "default" not in config.plans  # plain keys are never handed out


def test_config_file_layout_with_mfa_on_the_source(tmp_path: Path) -> None:
    config = load_config(files_with(tmp_path, CONFIG_LAYOUT["config"], CONFIG_LAYOUT["credentials"]))
    dev = config.plans["dev"]
    assert isinstance(dev, RolePlan) and isinstance(dev.source, SessionSource)
    assert dev.source.key.mfa_serial == MFA_SERIAL
    assert isinstance(config.plans["alice"], SessionPlan)  # an MFA-protected user


def test_environment_variables_choose_the_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = files_with(tmp_path, CONFIG_LAYOUT["config"], CONFIG_LAYOUT["credentials"])
    monkeypatch.setenv("AWS_CONFIG_FILE", files.config_file)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", files.credentials_file)
    assert ConfigFiles.from_environment() == files
    assert "dev" in load_config(ConfigFiles.from_environment()).plans


def test_static_source_without_mfa_and_session_seconds(tmp_path: Path) -> None:
    config = load_config(files_with(tmp_path, credentials=f"""
[alice]
{KEYS}
rolebroker_mfa_session_seconds = 3600
[ops]
role_arn = {DEV_ROLE}
source_profile = alice
duration_seconds = 43200
"""))
    ops = config.plans["ops"]
    assert isinstance(ops, RolePlan) and isinstance(ops.source, StaticSource)
    assert ops.duration == 43200  # no chaining cap from long-term keys


def test_chain_and_botocore_sources(tmp_path: Path) -> None:
    config = load_config(files_with(tmp_path, config=f"""
[profile sso]
credential_process = echo nothing
[profile first]
role_arn = {DEV_ROLE}
source_profile = sso
[profile second]
role_arn = arn:aws:iam::555555555555:role/second
source_profile = first
duration_seconds = 7200
[profile ec2]
role_arn = {DEV_ROLE}
credential_source = Environment
"""))
    first, second, ec2 = (config.plans[n] for n in ("first", "second", "ec2"))
    assert isinstance(first, RolePlan) and first.source == BotocoreSource("sso")
    assert isinstance(second, RolePlan) and second.source == RoleSource("first")
    assert second.duration == 3600
    assert isinstance(ec2, RolePlan) and ec2.source == BotocoreSource("ec2", "Environment")


@pytest.mark.parametrize("credentials, profile, expected", [
    (f"[dev]\nrole_arn = {DEV_ROLE}\nsource_profile = nobody\n", "dev", "source_profile 'nobody' does not exist"),
    (f"[a]\nrole_arn = {DEV_ROLE}\nsource_profile = b\n[b]\nrole_arn = {DEV_ROLE}\nsource_profile = a\n",
     "a", "source_profile cycle a -> b -> a"),
    (f"[a]\n{KEYS}role_arn = {DEV_ROLE}\nsource_profile = b\n[b]\nrole_arn = {DEV_ROLE}\nsource_profile = a\n",
     "a", "'a' holds keys but also a role_arn, so it is used as a role; give it `source_profile = a`"),
    ("[dev]\nrole_arn = arn:aws:iam::12:role/x\nsource_profile = dev\n", "dev", "is not a role ARN"),
    (f"[k]\n{KEYS}[dev]\nrole_arn = {DEV_ROLE}\nsource_profile = k\nduration_seconds = 60\n",
     "dev", "duration_seconds = 60 is out of range; use 900 to 43200"),
    (f"[k]\n{KEYS}[dev]\nrole_arn = {DEV_ROLE}\nsource_profile = k\ncredential_source = Environment\n",
     "dev", "both source_profile and credential_source"),
    (f"[dev]\nrole_arn = {DEV_ROLE}\n", "dev", "needs a source_profile"),
    (f"[k]\n{KEYS}mfa_serial = {MFA_SERIAL}\nrolebroker_mfa_session_seconds = 200000\n", "k", "use 900 to 129600"),
])
def test_broken_profiles_are_reported_and_the_rest_served(
        tmp_path: Path, credentials: str, profile: str, expected: str) -> None:
    good = f"[ok-keys]\n{KEYS}\n[ok]\nrole_arn = {DEV_ROLE}\nsource_profile = ok-keys\nmfa_serial = {MFA_SERIAL}\n"
    config = load_config(files_with(tmp_path, credentials=credentials + "\n" + good))
    assert expected in config.errors[profile]
    assert f"profile {profile!r}" in config.errors[profile]
    assert "credentials" in config.errors[profile]  # names the file
    assert "ok" in config.plans


def test_an_unreadable_duration_is_ignored_as_the_aws_cli_does_and_said_in_a_note(tmp_path: Path) -> None:
    config = load_config(files_with(tmp_path, credentials=f"""
[k]
{KEYS}
[dev]
role_arn = {DEV_ROLE}
source_profile = k
duration_seconds = 1h
"""))
    dev = config.plans["dev"]
    assert isinstance(dev, RolePlan) and dev.duration == 3600
    assert any("duration_seconds = '1h' is not a whole number" in note for note in dev.notes)


def test_temporary_source_keys_keep_their_token_and_never_buy_a_session(tmp_path: Path) -> None:
    config = load_config(files_with(tmp_path, credentials=f"""
[saml]
aws_access_key_id = ASIASAML000000000001
aws_secret_access_key = secret
aws_session_token = the-token
mfa_serial = {MFA_SERIAL}
[dev]
role_arn = {DEV_ROLE}
source_profile = saml
duration_seconds = 7200
[strict]
role_arn = {DEV_ROLE}
source_profile = saml
mfa_serial = {MFA_SERIAL}
"""))
    dev, strict = config.plans["dev"], config.plans["strict"]
    assert isinstance(dev, RolePlan) and isinstance(dev.source, StaticSource)
    assert dev.source.keys.session_token == "the-token" and dev.duration == 3600
    assert "saml" not in config.plans  # its mfa_serial cannot buy a session from temporary keys
    assert isinstance(strict, RolePlan) and isinstance(strict.source, DirectSource)
    assert strict.source.signer == dev.source and strict.source.key.mfa_serial == MFA_SERIAL


def test_syntax_error_names_the_file(tmp_path: Path) -> None:
    files = files_with(tmp_path, config="region = us-east-1\n[profile x\n")
    with pytest.raises(ConfigFileError) as raised:
        load_config(files)
    assert files.config_file in str(raised.value)


def test_non_utf8_file_names_the_file(tmp_path: Path) -> None:
    files = files_with(tmp_path)
    Path(files.credentials_file).write_bytes(b"[dev]\nrole_arn = \xff\xfe\n")
    with pytest.raises(ConfigFileError) as raised:
        load_config(files)
    assert files.credentials_file in str(raised.value) and "UTF-8" in str(raised.value)


def test_unreadable_file_names_the_file(tmp_path: Path) -> None:
    files = files_with(tmp_path, config="[profile x]\n")
    os.unlink(files.credentials_file)
    os.mkdir(files.credentials_file)  # unreadable as a file even for root, unlike chmod 0
    with pytest.raises(ConfigFileError) as raised:
        load_config(files)
    assert files.credentials_file in str(raised.value) and "is a directory, not a regular file" in str(raised.value)


def test_missing_files_are_an_empty_config(tmp_path: Path) -> None:
    config = load_config(ConfigFiles(str(tmp_path / "none"), str(tmp_path / "nothing")))
    assert not config.plans and not config.errors
