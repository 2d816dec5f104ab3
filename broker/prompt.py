"""The desktop dialog the daemon raises for an MFA code when no terminal is there:
zenity, kdialog or osascript, chosen per MFA profile with `rolebroker_mfa_prompt`.

The dialog's texts go in as arguments (they hold a profile name and a device ARN); the
code comes back on its standard output, never through argv, a file or a log line. It
runs as a child process awaited on the loop, so nothing waits for the human but the
dialog's own task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from typing import Protocol

log = logging.getLogger("rolebroker.prompt")

# A dialog nobody answers is closed after this long (real time: it is about a human).
DIALOG_TIMEOUT = 300.0
OSASCRIPT_DIALOG = ["-e", "on run argv", "-e",
                    'text returned of (display dialog (item 2 of argv) default answer "" '
                    'with title (item 1 of argv) with icon caution)', "-e", "end run"]


class PromptUnavailable(Exception):
    """The dialog program cannot run here (not installed, no display)."""


class CodePrompt(Protocol):
    async def ask(self, title: str, text: str) -> str | None:
        """What the human typed, or None if they cancelled or nobody answered."""


def dialog_argv(program: str, title: str, text: str) -> list[str]:
    if program == "zenity":
        return ["zenity", "--entry", "--title", title, "--text", text, "--width", "420"]
    if program == "kdialog":
        return ["kdialog", "--title", title, "--inputbox", text]
    if program == "osascript":
        return ["osascript", *OSASCRIPT_DIALOG, title, text]
    raise ValueError(f"unknown dialog program {program!r}")


# A systemd user service starts with the user manager's environment, which has no DISPLAY
# unless the desktop session put it there; most desktops do at login, some do not.
NO_DISPLAY = ("the daemon has no display to open it on (neither DISPLAY nor WAYLAND_DISPLAY is set in its "
              "environment): under systemd, run `systemctl --user import-environment DISPLAY WAYLAND_DISPLAY "
              "XAUTHORITY` in your desktop session (or add it to your session's startup), then "
              "`systemctl --user restart rolebroker` (a restart ends the MFA sessions it holds, unless "
              "`rolebroker_session_cache = keyring` keeps them)")


def display_missing(program: str) -> bool:
    """zenity and kdialog need an X11 or Wayland display; osascript (macOS) does not."""
    return (program != "osascript" and sys.platform != "darwin"
            and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")))


class ProgramPrompt:
    def __init__(self, program: str, timeout: float = DIALOG_TIMEOUT) -> None:
        dialog_argv(program, "", "")  # refuse an unknown program now, not when a human waits
        self.program = program
        self.timeout = timeout

    async def ask(self, title: str, text: str) -> str | None:
        if display_missing(self.program):
            raise PromptUnavailable(NO_DISPLAY)
        try:
            process = await asyncio.create_subprocess_exec(
                *dialog_argv(self.program, title, text), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        except OSError as exc:
            raise PromptUnavailable(f"cannot run {self.program}: {exc.strerror or exc}") from None
        try:
            out, _ = await asyncio.wait_for(process.communicate(), self.timeout)
        except (TimeoutError, asyncio.CancelledError):
            # Unanswered, or the daemon is stopping: the dialog goes with it.
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            with contextlib.suppress(Exception):
                await asyncio.shield(process.wait())
            if asyncio.current_task() is not None and asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise
            log.info("%s dialog closed: nobody answered within %.0f s", self.program, self.timeout)
            return None
        if process.returncode in (1, 5):
            return None  # Cancel, Escape or the window closed (all three say 1; zenity's timeout 5)
        if process.returncode != 0:
            raise PromptUnavailable(f"{self.program} exited with status {process.returncode} "
                                    "(no display it may use?)")
        return out.decode(errors="replace").strip()


def program_prompt(program: str) -> CodePrompt:
    """The one place a profile's `rolebroker_mfa_prompt` becomes a dialog."""
    return ProgramPrompt(program)
