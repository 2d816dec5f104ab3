"""Real `rolebroker` processes for tests: the installed console script, run as a user would."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import Lines

# The console script of the environment running the tests: what `pip install` puts on PATH.
ROLEBROKER = Path(sys.executable).parent / "rolebroker"
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0

needs_rolebroker = pytest.mark.skipif(not ROLEBROKER.exists(),
                                      reason=f"no rolebroker console script at {ROLEBROKER}: pip install -e .")


def daemon_env(tmp: Path, **extra: str) -> dict[str, str]:
    """An environment isolated from the user's: private runtime/state dirs, empty AWS files,
    and nothing systemd-ish inherited from whatever runs the tests."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "ROLEBROKER_", "LISTEN_")) and k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")}
    env.update(ROLEBROKER_RUNTIME_DIR=str(tmp / "run"), ROLEBROKER_STATE_DIR=str(tmp / "state"),
               AWS_CONFIG_FILE=str(tmp / "aws-config"), AWS_SHARED_CREDENTIALS_FILE=str(tmp / "aws-credentials"))
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Serve:
    """`rolebroker serve` as a real child process, with its stderr readable line by line."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        self.log = Lines(self.proc.stderr)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT)
        self.log.join(STOP_TIMEOUT)  # EOF once the process (and any child holding stderr) is gone


def rolebroker(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ROLEBROKER), *args], env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60)




def socket_activated(activate: str, tmp: Path, listen: list[str], *serve_args: str) -> tuple[Serve, dict[str, str]]:
    """`rolebroker serve` under systemd-socket-activate, which holds `listen` (ADDRESS:PORT or
    a Unix socket path) and starts the daemon on the first connection, as systemd does."""
    env = daemon_env(tmp)
    # systemd-socket-activate hands its child a minimal environment; -E passes ours on.
    passed = [arg for name in ("ROLEBROKER_RUNTIME_DIR", "ROLEBROKER_STATE_DIR", "AWS_CONFIG_FILE",
                               "AWS_SHARED_CREDENTIALS_FILE") for arg in ("-E", name)]
    sockets = [arg for address in listen for arg in ("-l", address)]
    activator = Serve([activate, *sockets, *passed, str(ROLEBROKER), "serve", *serve_args], env)
    for address in listen:
        activator.log.wait_for(f"Listening on {address}")
    return activator, env
