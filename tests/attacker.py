"""Another local user, made for real: the attacker of the threat model.

Tests that replay an attack by a second uid create that user (CI runs as root) and run
the attack as a separate process with that uid, using the system's Python and its
standard library only: the attacker has no access to our venv, our files or our tokens.
Without root (a developer's laptop) those tests are skipped, saying why.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ATTACKER_NAME = "rbattacker"
# The system interpreter: world-executable, unlike a venv under a private home directory.
SYSTEM_PYTHONS = ("/usr/bin/python3", "/usr/local/bin/python3")


@dataclass(frozen=True)
class OtherUser:
    name: str
    uid: int
    gid: int
    python: str
    home: Path  # a scratch directory the attacker owns

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[str]:
        """Start a process as this user, with none of our environment."""
        kwargs.setdefault("env", {"PATH": "/usr/bin:/bin", "HOME": str(self.home)})
        kwargs.setdefault("cwd", str(self.home))
        return subprocess.Popen(argv, user=self.uid, group=self.gid, extra_groups=[], text=True, **kwargs)

    def python_popen(self, script: str, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
        """Run a Python script (text) as this user: it is written to the attacker's own directory."""
        fd, path = tempfile.mkstemp(suffix=".py", dir=self.home)
        with os.fdopen(fd, "w") as handle:
            handle.write(script)
        os.chown(path, self.uid, self.gid)
        return self.popen([self.python, path, *args], **kwargs)

    def run_python(self, script: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        process = self.python_popen(script, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = process.communicate(timeout=timeout)
        return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def make_other_user(scratch: Path) -> OtherUser | str:
    """The attacker user, or the reason it cannot be had here."""
    if os.geteuid() != 0:
        return "needs root to create a second local user (CI runs as root)"
    python = next((p for p in SYSTEM_PYTHONS if os.access(p, os.X_OK)), None)
    if python is None:
        return "no system python3 that another user can run"
    try:
        entry = pwd.getpwnam(ATTACKER_NAME)
    except KeyError:
        useradd = shutil.which("useradd")
        if useradd is None:
            return "no useradd on this machine"
        subprocess.run([useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        ATTACKER_NAME], check=True, capture_output=True)
        entry = pwd.getpwnam(ATTACKER_NAME)
    home = Path(tempfile.mkdtemp(prefix="attacker-", dir=scratch))
    os.chown(home, entry.pw_uid, entry.pw_gid)
    home.chmod(0o700)
    # The scratch directory's parents must be passable for the attacker to reach its own home.
    for parent in [scratch, *scratch.parents]:
        if parent == Path("/"):
            break
        if not os.stat(parent).st_mode & 0o001:
            return f"{parent} is not passable by other users; cannot give the attacker a directory"
    user = OtherUser(ATTACKER_NAME, entry.pw_uid, entry.pw_gid, python, home)
    check = user.popen([python, "-c", "pass"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if check.wait(30) != 0:
        return f"{python} does not run as {ATTACKER_NAME}"
    return user
