"""`rolebroker docker setup | teardown | status`: put the ECS link-local address on this
machine so that containers on a Docker bridge network can reach the broker.

A bridged container cannot reach the host's 127.0.0.1, and the SDKs accept plain http only
to loopback or to the ECS/EKS link-local addresses (docs/SDK-COMPATIBILITY.md). So, as the EKS
Pod Identity agent does with 169.254.170.23, the address goes on a dummy link of the host:
a container's packets to it leave through its default gateway (the bridge), and the host
delivers them locally because the address is its own. The daemon then also listens there
(`rolebroker serve --listen 169.254.170.2:9911`).

This is a root step done once per boot (systemd/rolebroker-docker-link.service redoes it at
boot). It only ever drives the `ip` program of iproute2, so it stays standard library only
like the rest of the CLI, and it never touches an address or a link it did not create.

When the kernel has no dummy driver (some VM and container kernels are built without
CONFIG_DUMMY and cannot load modules), the address goes on `lo` instead, under a label that
marks it as ours so that `teardown` removes exactly that address and nothing else.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Sequence

# The options live in their own module: `rolebroker` builds its whole parser on every call,
# and this module's imports (dataclasses, subprocess) would cost each call more than argparse.
from .docker_args import DEFAULT_ADDRESS, add_arguments
from .executable import rolebroker_executable
from .docker_args import DEFAULT_INTERFACE as DEFAULT_INTERFACE  # re-exported: tests, scripts
from .docker_args import LINK_LOCAL_ADDRESSES as LINK_LOCAL_ADDRESSES

LOOPBACK = "lo"
IP_TIMEOUT = 30.0
# Linux interface names (and address labels) are at most 15 bytes (IFNAMSIZ - 1).
IFNAMSIZ = 15
# What `ip link add ... type dummy` says when the kernel has no dummy driver.
NO_DUMMY_DRIVER = ("unknown device type", "not supported", "no such device")


class LinkError(Exception):
    """A refusal or a failed `ip` call, with a message saying what to do."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message, self.code = message, code


@dataclass(frozen=True)
class Placement:
    """One configured copy of an address: the link it is on, and its label (IPv4 only)."""

    interface: str
    label: str
    prefix: int


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rolebroker docker", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    try:
        check_interface_name(args.interface)
        link = DockerLink(args.address, args.interface)
        if args.action == "setup":
            return link.setup(args.port)
        if args.action == "teardown":
            return link.teardown()
        return link.status(args.port)
    except LinkError as exc:
        print(f"rolebroker: {exc.message}", file=sys.stderr)
        return exc.code


def check_interface_name(name: str) -> None:
    # ip would refuse most of these itself, but with a message about `ip`, not about us.
    if not name or len(name) > IFNAMSIZ or any(c in name for c in "/: \t\n") or name in (".", ".."):
        raise LinkError(f"--interface {name!r}: a link name is 1-{IFNAMSIZ} characters without '/', ':' "
                        "or spaces", 2)


def ip_program() -> str:
    """The `ip` binary: $ROLEBROKER_IP (tests, unusual systems), else PATH and the sbin dirs
    (a user's PATH often lacks /usr/sbin, where Debian puts ip)."""
    explicit = os.environ.get("ROLEBROKER_IP")
    if explicit:
        if os.path.isfile(explicit) and os.access(explicit, os.X_OK):
            return explicit
        raise LinkError(f"ROLEBROKER_IP={explicit} is not an executable file")
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin", "/bin"])
    found = shutil.which("ip", path=search)
    if found is None:
        raise LinkError("the `ip` program (iproute2) is missing: install it, e.g. "
                        "`sudo apt-get install iproute2` or `sudo dnf install iproute`")
    return found


def require_root(action: str) -> None:
    if os.geteuid() != 0:
        # sudo's secure_path usually lacks ~/.local/bin, where pip/pipx put the script.
        raise LinkError(f"`docker {action}` changes the host's network links: run with sudo, e.g. "
                        f"sudo \"$(command -v rolebroker)\" docker {action}")


class DockerLink:
    def __init__(self, address: str, interface: str) -> None:
        self.address = address
        self.version = ipaddress.ip_address(address).version
        self.prefix = 32 if self.version == 4 else 128
        self.interface = interface
        self.ip = ip_program()
        # The lo label that marks our copy of the address (IPv4 only: IPv6 has no labels).
        self.loopback_label = f"{LOOPBACK}:{interface}"[:IFNAMSIZ]

    # ---- talking to ip ---------------------------------------------------------------------

    def _ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        try:
            result = subprocess.run([self.ip, *args], capture_output=True, text=True,
                                    stdin=subprocess.DEVNULL, timeout=IP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise LinkError(f"`ip {' '.join(args)}` did not finish within {IP_TIMEOUT:.0f} s") from None
        if check and result.returncode != 0:
            raise LinkError(f"`ip {' '.join(args)}` failed: {result.stderr.strip() or result.returncode}")
        return result

    def _change(self, done: list[str], *args: str) -> None:
        """Run an `ip` command that changes the system, and remember it for the report."""
        self._ip(*args)
        done.append(f"ip {' '.join(args)}")

    def placements(self) -> list[Placement]:
        """Every link that holds the address now (normally none or one)."""
        family = "-4" if self.version == 4 else "-6"
        links = self._json("-j", family, "addr", "show")
        wanted = ipaddress.ip_address(self.address)
        found: list[Placement] = []
        for link in links:
            for info in link.get("addr_info", []):
                if "local" in info and ipaddress.ip_address(info["local"]) == wanted:
                    # IPv4 addresses carry a label (the link's name unless given one); IPv6 none.
                    found.append(Placement(str(link["ifname"]), str(info.get("label", link["ifname"])),
                                           int(info.get("prefixlen", self.prefix))))
        return found

    def _json(self, *args: str) -> list[dict[str, Any]]:
        output = self._ip(*args).stdout
        try:
            value = json.loads(output) if output.strip() else []
        except ValueError:
            raise LinkError(f"cannot read the output of `ip {' '.join(args)}`: iproute2 4.14 or newer "
                            "is needed (busybox ip has no -j)") from None
        return [item for item in value if isinstance(item, dict)]

    def link_kind(self) -> str | None:
        """'dummy', another kind, '' (a plain device such as lo or eth0), or None if missing."""
        if self._ip("link", "show", "dev", self.interface, check=False).returncode != 0:
            return None
        links = self._json("-d", "-j", "link", "show", "dev", self.interface)
        return str(links[0].get("linkinfo", {}).get("info_kind", "")) if links else None

    def link_is_up(self, interface: str) -> bool:
        links = self._json("-j", "link", "show", "dev", interface)
        # The administrative flag, not operstate: a dummy link that is up reports UNKNOWN.
        return bool(links) and "UP" in links[0].get("flags", [])

    def ours(self, placement: Placement) -> bool:
        """A copy of the address we made: on our dummy link, or on lo under our label."""
        if placement.interface == LOOPBACK:
            return self.version == 4 and placement.label == self.loopback_label
        return placement.interface == self.interface and self.link_kind() == "dummy"

    # ---- the actions ---------------------------------------------------------------------

    def setup(self, port: int) -> int:
        require_root("setup")
        done: list[str] = []
        present = self.placements()
        foreign = [p for p in present if not self.ours(p)]
        if foreign and not any(self.ours(p) for p in present):
            # Someone else (an ECS agent, a hand-made config) already serves this address from
            # here: the daemon can bind it as it is, and tearing it down later is not ours to do.
            where = ", ".join(p.interface for p in foreign)
            print(f"{self.address} is already configured on {where} (not by rolebroker): nothing to do.")
            self._print_next_steps(port)
            return 0
        on_loopback = any(p.interface == LOOPBACK and self.ours(p) for p in present)
        if self.interface == LOOPBACK or (on_loopback and self.link_kind() is None):
            # Asked for, or an earlier setup fell back to lo (no dummy driver): keep it there.
            self._setup_on_loopback(done)
        else:
            self._setup_dummy(done)
        self._setup_redirect(port, done)
        if done:
            print("Done:")
            for command in done:
                print(f"  {command}")
        else:
            print(f"Already set up: {self.address} is on {self._where()}.")
        self._print_next_steps(port)
        return 0

    def _setup_redirect(self, port: int, done: list[str]) -> None:
        """Port 80 of the ECS address to the daemon's port, for AWS_CONTAINER_CREDENTIALS_RELATIVE_URI."""
        from . import ecs_redirect

        if self.address != ecs_redirect.ECS_ADDRESS or port == 80:
            return  # the ECS form always means 169.254.170.2:80; a daemon on port 80 needs no redirect
        if ecs_redirect.target_port() == port:
            return
        try:
            done.append(ecs_redirect.add(port))
        except ecs_redirect.RedirectError as exc:
            print(f"note: {exc}", file=sys.stderr)

    def _setup_dummy(self, done: list[str]) -> None:
        kind = self.link_kind()
        if kind is None:
            result = self._ip("link", "add", self.interface, "type", "dummy", check=False)
            if result.returncode != 0:
                if any(text in result.stderr.lower() for text in NO_DUMMY_DRIVER) and self.version == 4:
                    print(f"note: this kernel has no dummy link driver ({result.stderr.strip()}); "
                          f"putting {self.address} on {LOOPBACK} instead", file=sys.stderr)
                    self._setup_on_loopback(done)
                    return
                raise LinkError(f"`ip link add {self.interface} type dummy` failed: {result.stderr.strip()}")
            done.append(f"ip link add {self.interface} type dummy")
        elif kind != "dummy":
            raise LinkError(f"a link named {self.interface} exists and is not a dummy link ({kind or 'device'}): "
                            "it is not rolebroker's; pick another name with --interface")
        if not any(p.interface == self.interface for p in self.placements()):
            extra = ["nodad"] if self.version == 6 else []  # usable at once, no duplicate detection wait
            self._change(done, "addr", "add", f"{self.address}/{self.prefix}", "dev", self.interface, *extra)
        if not self.link_is_up(self.interface):
            self._change(done, "link", "set", self.interface, "up")

    def _setup_on_loopback(self, done: list[str]) -> None:
        if self.version != 4:
            # Without a label we could not tell our copy from someone else's at teardown.
            raise LinkError(f"{self.address} can only go on a dummy link (this kernel has none, or lo was "
                            f"asked for): IPv6 addresses on lo carry no label that would mark them as "
                            f"rolebroker's for teardown; use {DEFAULT_ADDRESS}")
        if not any(self.ours(p) for p in self.placements()):
            self._change(done, "addr", "add", f"{self.address}/32", "dev", LOOPBACK,
                         "label", self.loopback_label)
        if not self.link_is_up(LOOPBACK):
            # Only a fresh network namespace has lo down; teardown leaves it up, as every host has it.
            self._change(done, "link", "set", LOOPBACK, "up")

    def teardown(self) -> int:
        require_root("teardown")
        done: list[str] = []
        kind = self.link_kind() if self.interface != LOOPBACK else None
        if kind == "dummy":
            self._change(done, "link", "del", self.interface)
        elif kind is not None:
            raise LinkError(f"{self.interface} is not a dummy link ({kind or 'device'}): it is not rolebroker's, "
                            "leaving it alone")
        from . import ecs_redirect

        try:
            removed = ecs_redirect.remove() if self.address == ecs_redirect.ECS_ADDRESS else None
        except ecs_redirect.RedirectError as exc:
            raise LinkError(str(exc)) from None
        if removed:
            done.append(removed)
        # The loopback fallback (or --interface lo): only the copy under our label.
        for placement in self.placements():
            if placement.interface == LOOPBACK and self.ours(placement):
                self._change(done, "addr", "del", f"{self.address}/{placement.prefix}", "dev", LOOPBACK,
                             "label", placement.label)
        if done:
            print("Done:")
            for command in done:
                print(f"  {command}")
        else:
            print(f"Nothing to tear down: {self.address} is not set up by rolebroker here.")
        left = self.placements()
        if left:
            print(f"note: {self.address} is still on {', '.join(p.interface for p in left)} (not rolebroker's)")
        return 0

    def status(self, port: int) -> int:
        present = self.placements()
        if not present:
            print(f"{self.address} is not on this machine: bridged containers cannot reach the broker. "
                  f"Run `sudo rolebroker docker setup`.")
            return 3  # as `rolebroker status`: the LSB code for "not running"
        for placement in present:
            state = "up" if self.link_is_up(placement.interface) else "DOWN"
            owner = "rolebroker's" if self.ours(placement) else "not rolebroker's"
            print(f"{self.address} is on {placement.interface} ({state}, {owner}).")
        from . import ecs_redirect

        if self.address == ecs_redirect.ECS_ADDRESS and os.geteuid() == 0:  # reading nft rules needs root
            redirected = ecs_redirect.target_port()
            print(f"Port 80 of {self.address} is redirected to port {redirected} (the ECS form works)."
                  if redirected else f"Port 80 of {self.address} is not redirected (Ruby and PHP get nothing, "
                  "unless the daemon listens there itself).")
        listening = daemon_listeners()
        if listening is None:
            print("The daemon is not running (as this user): start it with "
                  f"`rolebroker serve --listen {self._listen(port)}`.")
        elif any(item.rpartition(":")[0].strip("[]") == self.address for item in listening):
            print(f"The daemon listens on {', '.join(listening)}: containers can use it "
                  "(`rolebroker env PROFILE --format docker`).")
        else:
            print(f"The daemon does not listen on {self.address}: restart it with "
                  f"`--listen {self._listen(port)}`.")
        return 0

    # ---- what the user reads ---------------------------------------------------------------

    def _where(self) -> str:
        return ", ".join(f"{p.interface} (label {p.label})" if p.interface == LOOPBACK else p.interface
                         for p in self.placements())

    def _listen(self, port: int) -> str:
        return f"[{self.address}]:{port}" if self.version == 6 else f"{self.address}:{port}"

    def _print_next_steps(self, port: int) -> None:
        listen = self._listen(port)
        from .service import unit_quote  # only here: every CLI command imports this module

        executable = unit_quote(rolebroker_executable())
        print(f"""
This lasts until the next reboot; to redo it at boot, install the system unit
systemd/rolebroker-docker-link.service (see the comments in it).

Next, as your own user (not root), make the daemon listen there too:
  rolebroker serve --listen {listen}
or, with the systemd user units (`rolebroker service install`), add the address to the
socket, so that a container's first request starts the daemon as a local one does:
  systemctl --user edit rolebroker.socket      # and add:
    [Socket]
    ListenStream={listen}
    FreeBind=yes
  systemctl --user restart rolebroker.socket   # stops the daemon: log in again afterwards
(`systemctl --user edit rolebroker` with `ExecStart=` then
`ExecStart={executable} serve --listen {listen}` works too, but that listener
opens only once something local has started the daemon.)

Then run containers with:  docker run $(rolebroker env PROFILE --format docker) IMAGE ...
With port 80 of 169.254.170.2 leading to the daemon (the nftables redirect above, to port {port}),
`env` gives containers AWS_CONTAINER_CREDENTIALS_RELATIVE_URI, the one variable every SDK reads
(Ruby and PHP read nothing else), and the host's shells get it too.
Go SDK: with HTTP_PROXY/HTTPS_PROXY set in a container, Go sends requests for {self.address}
to the proxy unless NO_PROXY names it; `rolebroker env --format docker` puts it in NO_PROXY,
keep it there if you set NO_PROXY yourself.""")


def daemon_listeners() -> list[str] | None:
    """The addresses the running daemon of this user listens on (None: not running)."""
    from ..broker.runtime import DAEMON_FILE, runtime_dir

    try:
        info = json.loads((runtime_dir() / DAEMON_FILE).read_bytes())
    except (OSError, ValueError):
        return None
    pid = info.get("pid")
    if isinstance(pid, int) and not Path(f"/proc/{pid}").exists() and Path("/proc/self").exists():
        return None  # a stale file left by a daemon that was killed
    return [str(item) for item in info.get("listen", [])]


if __name__ == "__main__":
    sys.exit(main())
