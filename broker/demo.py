"""The built-in demo: an embedded STS test double and a generated AWS config with an
IAM user behind an MFA device and two one-hour roles, so the whole flow can be tried
without an AWS account. The demo device accepts any six-digit code, once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import ConfigFiles
from .runtime import ensure_private_dir, write_private
from .sts_double import StsDouble
from .sts_world import IamUser, MfaDevice, Role

DEMO_ACCOUNT = "111111111111"
MFA_SERIAL = f"arn:aws:iam::{DEMO_ACCOUNT}:mfa/demo-user"
# Fake keys for the fake STS above: they open nothing anywhere else.
DEMO_KEY_ID = "AKIADEMO000000000001"
DEMO_SECRET = "demo/secret/key/that/only/the/demo/sts/knows"


@dataclass
class Demo:
    sts: StsDouble
    files: ConfigFiles

    def stop(self) -> None:
        self.sts.stop()


def start_demo(runtime_dir: Path) -> Demo:
    user = IamUser(DEMO_KEY_ID, DEMO_SECRET, f"arn:aws:iam::{DEMO_ACCOUNT}:user/demo-user",
                   MfaDevice(MFA_SERIAL, totp_secret=None))
    roles = [Role("arn:aws:iam::222222222222:role/demo-dev", require_mfa=True),
             Role("arn:aws:iam::333333333333:role/demo-prod", require_mfa=True)]
    sts = StsDouble([user], roles).start()
    directory = ensure_private_dir(runtime_dir / "demo")
    files = ConfigFiles(str(directory / "config"), str(directory / "credentials"))
    # The layout many guides use: roles straight in the credentials file; the STS
    # endpoint comes from a `services` section, as it would for any STS-compatible endpoint.
    write_private(Path(files.credentials_file), f"""\
[demo-user]
aws_access_key_id = {DEMO_KEY_ID}
aws_secret_access_key = {DEMO_SECRET}

[dev]
role_arn = arn:aws:iam::222222222222:role/demo-dev
source_profile = demo-user
mfa_serial = {MFA_SERIAL}

[prod]
role_arn = arn:aws:iam::333333333333:role/demo-prod
source_profile = demo-user
mfa_serial = {MFA_SERIAL}
duration_seconds = 7200
""".encode())
    write_private(Path(files.config_file), f"""\
[profile demo-user]
region = us-east-1
services = demo-sts

[profile dev]
region = eu-west-1
services = demo-sts

[profile prod]
region = eu-central-1
services = demo-sts

[services demo-sts]
sts =
  endpoint_url = {sts.endpoint_url}
""".encode())
    return Demo(sts, files)
