"""Reaching the human where the need arises, while no terminal is looking: desktop
notifications, and the desktop dialog that takes an MFA code (`rolebroker_mfa_prompt`).

The SessionManager reports moments (a client refused for lack of a login, an MFA session
about to end, a failing renewal or STS); this decides whom to tell, how often, and when
to ask for a code. Nothing here holds a request: the SDK that was refused got its 403 at
once, and its next call is served once the code is in. A code from a dialog goes to STS
once, through the same login as the CLI's, and only while a login is still wanted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
from collections.abc import Callable

from .plans import DirectSource, MfaSessionKey, SessionSource
from .errors import BrokerError, MfaCodeRejected, MfaProcessFailed
from .history import clock_time
from .mfa import normalize_code
from .notify import Notice, Notifier, OnLogin
from .prompt import CodePrompt, PromptUnavailable, program_prompt
from .sessions import SessionManager

log = logging.getLogger("rolebroker.attention")

# At most one notice of a kind per MFA device (or profile) in this many seconds.
NOTIFY_EVERY = 300.0
# After a dialog is cancelled, ask again no sooner than this.
CANCEL_QUIET = 300.0
# STS failing while the credentials served now end within this: tell the human.
RUNNING_OUT = 900.0
# Malformed or rejected codes before the dialog gives up (and waits CANCEL_QUIET).
TRIES = 3

MfaRoot = SessionSource | DirectSource


class Attention:
    def __init__(self, sessions: SessionManager, notifier: Callable[[OnLogin], Notifier],
                 prompts: Callable[[str], CodePrompt] = program_prompt) -> None:
        self.sessions = sessions
        self.notifier = notifier(self.ask_now)
        self.prompts = prompts
        self._last_notice: dict[tuple[str, str], float] = {}
        self._asking: dict[str, asyncio.Task[None]] = {}
        self._quiet_until: dict[str, float] = {}
        self._running_out: set[tuple[str, float]] = set()

    # ---- what the sessions report (SessionEvents) ---------------------------------------

    def login_refused(self, profile: str) -> None:
        root = self._root(profile)
        if root is None:
            return
        serial = root.key.mfa_serial or ""
        dialog = self._ask(profile, root, "a client was refused", lambda: self.sessions.needs_login(profile))
        if not self._due("refused", serial):
            return
        ended = self.sessions.session_ended(profile)
        why = f"{ended}. " if ended else ""
        then = "Type the code in the dialog, or run" if dialog else "Run"
        self.notifier.show(Notice(
            key=f"login:{serial}", title=f"rolebroker: {profile} needs an MFA code",
            body=f"{why}A client asking for {profile} was refused. {then} `rolebroker login {shlex.quote(profile)}` "
                 f"with a code from {serial}.",
            login_profile=profile if root.mfa_prompt else None))

    def mfa_session_ending(self, key: MfaSessionKey, expires_at: float) -> None:
        profiles = self.sessions.profiles_using(key)
        profile = profiles[0] if profiles else key.source_profile
        root = self._root(profile)
        now = self.sessions.clock.now()
        left = max(0, round((expires_at - now) / 60))
        dialog = False
        if root is not None:
            dialog = self._ask(profile, root, f"the MFA session ends in {left} min",
                               lambda: self._still_ending(key, expires_at))
        then = "Type a code in the dialog, or run" if dialog else "Run"
        self.notifier.show(Notice(
            key=f"ending:{key.mfa_serial}", title=f"rolebroker: MFA session ends at {clock_time(expires_at, now)}",
            body=f"The MFA session of {key.label()} ends in {left} min; it serves {', '.join(profiles) or profile}. "
                 f"{then} `rolebroker login {shlex.quote(profile)}` to keep going.",
            login_profile=profile if root is not None and root.mfa_prompt else None))

    def renewal_failed(self, key: MfaSessionKey, message: str) -> None:
        if not self._due("renewal", key.mfa_serial or key.source_profile):
            return
        profiles = self.sessions.profiles_using(key)
        profile = profiles[0] if profiles else key.source_profile
        self.notifier.show(Notice(
            key=f"renewal:{key.mfa_serial}", title="rolebroker: renewing the MFA session failed",
            body=f"{message}. The broker tries again by itself; `rolebroker login {shlex.quote(profile)}` with a code "
                 "renews it now.", urgent=True))

    def credentials_failing(self, profile: str, error: BrokerError, expires_at: float | None) -> None:
        now = self.sessions.clock.now()
        if isinstance(error, MfaProcessFailed):
            root = self._root(profile)
            if self._due("mfa_process", root.key.mfa_serial or profile if root else profile):
                self.notifier.show(Notice(
                    key=f"mfa_process:{profile}", title="rolebroker: mfa_process failed",
                    body=f"{error.message}. `rolebroker login {shlex.quote(profile)}` with a code works meanwhile.",
                    urgent=True))
            return
        if not error.transient or expires_at is None or expires_at - now > RUNNING_OUT:
            return
        if (profile, expires_at) in self._running_out:
            return  # once per set of credentials about to run out
        self._running_out = {(p, e) for p, e in self._running_out if e > now}
        self._running_out.add((profile, expires_at))
        self.notifier.show(Notice(
            key=f"sts:{profile}",
            title=f"rolebroker: credentials for {profile} run out at {clock_time(expires_at, now)}",
            body=f"STS keeps failing ({error.message}); the broker keeps trying, but the credentials it serves "
                 f"for {profile} end in {max(0, round((expires_at - now) / 60))} min. Check the network or "
                 "`rolebroker status`.", urgent=True))

    # ---- the dialog ---------------------------------------------------------------------

    def ask_now(self, profile: str) -> None:
        """The notification's "Log in" action: the human asked, so no quiet period applies."""
        root = self._root(profile)
        if root is None or not root.mfa_prompt:
            return
        self._quiet_until.pop(root.key.mfa_serial or "", None)
        self._ask(profile, root, "you asked to log in", lambda: self._wanted(profile))

    def _ask(self, profile: str, root: MfaRoot, why: str, still_needed: Callable[[], bool]) -> bool:
        """Open the device's dialog unless one is open or was just cancelled; whether one is open."""
        serial = root.key.mfa_serial or ""
        if not root.mfa_prompt or root.mfa_process:
            return False
        if serial in self._asking:
            return True
        if self.sessions.clock.now() < self._quiet_until.get(serial, 0.0):
            return False
        task = asyncio.ensure_future(self._dialog(profile, root, why, still_needed))
        self._asking[serial] = task
        task.add_done_callback(lambda _: self._asking.pop(serial, None))
        return True

    async def _dialog(self, profile: str, root: MfaRoot, why: str, still_needed: Callable[[], bool]) -> None:
        serial = root.key.mfa_serial or ""
        assert root.mfa_prompt is not None
        prompt = self.prompts(root.mfa_prompt)
        first_title = title = f"rolebroker: MFA code for {profile}"
        base = f"Enter the code from your MFA device\n{serial}\nto log in to {profile} ({why})."
        text = base
        for _ in range(TRIES):
            try:
                answer = await prompt.ask(title, text)
            except PromptUnavailable as exc:
                log.warning("profile %s: the MFA dialog cannot open: %s", profile, exc)
                self._quiet_until[serial] = self.sessions.clock.now() + CANCEL_QUIET
                return
            if answer is None:
                log.info("profile %s: the MFA dialog was cancelled; not asking again for %.0f min", profile,
                         CANCEL_QUIET / 60)
                self._quiet_until[serial] = self.sessions.clock.now() + CANCEL_QUIET
                return
            if not self._holds(still_needed):
                log.info("profile %s: logged in meanwhile; the code from the dialog was not used", profile)
                return
            code = normalize_code(answer)
            if code is None:
                title, text = f"{first_title} - try again", f"That was not a six-digit code.\n\n{base}"
                continue
            try:
                result = await self.sessions.login(profile, code)
            except MfaCodeRejected as exc:
                title, text = f"{first_title} - try again", f"{exc.message}\n\n{base}"
                continue
            except BrokerError as exc:
                log.warning("profile %s: login from the MFA dialog failed: %s", profile, exc.message)
                self.notifier.show(Notice(key=f"login:{serial}", title=f"rolebroker: login to {profile} failed",
                                          body=exc.message, urgent=True))
                return
            log.info("profile %s: logged in from the MFA dialog", profile)
            until = clock_time(result.session_expires_at, self.sessions.clock.now()) \
                if result.session_expires_at else "its end"
            self.notifier.show(Notice(key=f"login:{serial}", title=f"rolebroker: logged in to {profile}",
                                      body=f"MFA session valid until {until}; serving {', '.join(result.profiles)}."))
            return
        self._quiet_until[serial] = self.sessions.clock.now() + CANCEL_QUIET

    # ---- helpers ------------------------------------------------------------------------

    @staticmethod
    def _holds(condition: Callable[[], bool]) -> bool:
        try:
            return condition()
        except BrokerError:  # the profile went away with a reload
            return False

    def _root(self, profile: str) -> MfaRoot | None:
        plan = self.sessions.config.plans.get(profile)
        root = self.sessions.root_session_source(plan) if plan is not None else None
        return root if root is not None and root.key.mfa_serial else None

    def _due(self, kind: str, subject: str) -> bool:
        now = self.sessions.clock.now()
        last = self._last_notice.get((kind, subject))
        if last is not None and now < last + NOTIFY_EVERY:
            return False
        self._last_notice[(kind, subject)] = now
        return True

    def _still_ending(self, key: MfaSessionKey, expires_at: float) -> bool:
        span = self.sessions.history.current(key)
        return span is not None and span.ends_at == expires_at and span.logged_out_at is None

    def _wanted(self, profile: str) -> bool:
        if self.sessions.needs_login(profile):
            return True
        root = self._root(profile)
        span = self.sessions.history.current(root.key) if root is not None else None
        now = self.sessions.clock.now()
        return span is not None and span.ends_at - now <= self.sessions.policy.mfa_warning

    async def close(self) -> None:
        for task in list(self._asking.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.notifier.close()
