"""A real Secret Service for tests: GNOME Keyring's daemon on a private D-Bus session bus,
unlocked with a test password, in temporary HOME / XDG directories (so the user's own
keyring is never touched). `keyring` reaches it through DBUS_SESSION_BUS_ADDRESS.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

PASSWORD = "rolebroker-test-password"
START_TIMEOUT = 20.0


def missing() -> str | None:
    """Why a Secret Service cannot be started here (None: it can)."""
    absent = [name for name in ("dbus-daemon", "gnome-keyring-daemon") if shutil.which(name) is None]
    if absent:
        return (f"{' and '.join(absent)} not installed: `apt-get install dbus gnome-keyring` "
                "(the CI script .ci/run installs them)")
    return None


@dataclass
class SecretService:
    home: Path
    env: dict[str, str]  # HOME, XDG_*, DBUS_SESSION_BUS_ADDRESS
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)
            if process.stdout is not None:
                process.stdout.close()
        shutil.rmtree(self.home, ignore_errors=True)

    def files(self) -> list[Path]:
        """Every file the keyring daemon keeps (its encrypted keyrings)."""
        return [p for p in self.home.rglob("*") if p.is_file()]


def start() -> SecretService:
    home = Path(tempfile.mkdtemp(prefix="rolebroker-keyring-"))
    runtime = home / "run"
    runtime.mkdir(mode=0o700)
    env = {"HOME": str(home), "XDG_RUNTIME_DIR": str(runtime), "XDG_DATA_HOME": str(home / "data"),
           "XDG_CONFIG_HOME": str(home / "config"), "XDG_CACHE_HOME": str(home / "cache")}
    service = SecretService(home, env)
    try:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("DBUS_", "XDG_", "GNOME_KEYRING"))}
        bus = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--print-address=1"],
                               env={**base, **env}, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        service.processes.append(bus)
        assert bus.stdout is not None
        address = bus.stdout.readline().decode().strip()  # printed once the bus listens
        if not address:
            raise RuntimeError("dbus-daemon printed no address")
        env["DBUS_SESSION_BUS_ADDRESS"] = address
        keyring = subprocess.Popen(["gnome-keyring-daemon", "--foreground", "--unlock", "--components=secrets"],
                                   env={**base, **env}, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        service.processes.append(keyring)
        assert keyring.stdin is not None
        keyring.stdin.write(PASSWORD.encode())
        keyring.stdin.close()
        _wait_for_service(env)
    except BaseException:
        service.stop()
        raise
    return service


def _wait_for_service(env: dict[str, str]) -> None:
    """Until the bus name org.freedesktop.secrets has an owner: subscribe to the bus's
    NameOwnerChanged first, then ask, then wait for the signal (bounded), so nothing is missed."""
    from jeepney import MatchRule, message_bus
    from jeepney.io.blocking import Proxy, open_dbus_connection

    rule = MatchRule(type="signal", sender="org.freedesktop.DBus", interface="org.freedesktop.DBus",
                     member="NameOwnerChanged", path="/org/freedesktop/DBus")
    rule.add_arg_condition(0, "org.freedesktop.secrets")
    with open_dbus_connection(env["DBUS_SESSION_BUS_ADDRESS"]) as connection:
        bus = Proxy(message_bus, connection, timeout=5)
        bus.AddMatch(rule)
        with connection.filter(rule) as signals:
            if bus.NameHasOwner("org.freedesktop.secrets")[0]:
                return
            connection.recv_until_filtered(signals, timeout=START_TIMEOUT)
