"""Reaching the human without a terminal: desktop notifications on a private session bus
(a recording notification server, written with jeepney, on a real dbus-daemon), and the
zenity dialog the daemon raises by itself, driven on an Xvfb display with xdotool."""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import pytest

from rolebroker.broker.attention import CANCEL_QUIET, NOTIFY_EVERY
from tests.desktop import Display, NotificationServer, SessionBus, needs
from tests.harness import ALICE_KEY, ALICE_SECRET, CONFIG_LAYOUT, MFA_SERIAL, Broker, start_broker

pytestmark = needs("dbus-daemon")

# Where the dialog's picture goes when asked (the README's docs/mfa-dialog.png is made so).
SCREENSHOT_DIR = os.environ.get("ROLEBROKER_SCREENSHOT_DIR")


def with_prompt(program: str = "zenity") -> dict[str, str]:
    """The AWS CLI's layout, with the desktop dialog chosen on the MFA profile."""
    config = CONFIG_LAYOUT["config"].replace(f"mfa_serial = {MFA_SERIAL}\n",
                                             f"mfa_serial = {MFA_SERIAL}\nrolebroker_mfa_prompt = {program}\n")
    return {"credentials": CONFIG_LAYOUT["credentials"], "config": config}


def refused(broker: Broker, profile: str = "dev") -> float:
    """A client asks and is refused at once (never held for a human); how long it took."""
    started = time.monotonic()
    status, _, body = broker.raw_get(profile, broker.token(profile))
    took = time.monotonic() - started
    assert (status, body["code"]) == (403, "LoginRequired"), body
    return took


def texts(server: NotificationServer) -> str:
    return "\n".join(f"{s.title}\n{s.body}" for s in server.shown)


# ---- notifications ----------------------------------------------------------------------------

def test_a_refused_client_is_announced_once_per_device_every_few_minutes(
        broker: Broker, notifications: NotificationServer) -> None:
    assert refused(broker, "dev") < 1.0
    shown = notifications.wait_for(lambda s: "dev needs an MFA code" in s.title)
    assert "rolebroker login dev" in shown.body and MFA_SERIAL in shown.body and shown.app == "rolebroker"
    assert shown.actions == []  # no dialog configured: nothing for a "Log in" button to open
    refused(broker, "dev")
    refused(broker, "prod")  # the same MFA device: still the one notice
    broker.advance(NOTIFY_EVERY + 1)
    refused(broker, "prod")
    again = notifications.wait_for(lambda s: "prod needs an MFA code" in s.title)
    assert again.replaces == shown.id  # replaces the first on screen instead of piling up
    assert [s.title for s in notifications.shown] == ["rolebroker: dev needs an MFA code",
                                                      "rolebroker: prod needs an MFA code"]


def test_the_end_of_an_mfa_session_is_announced_half_an_hour_ahead(
        broker: Broker, notifications: NotificationServer) -> None:
    broker.login("dev")
    broker.advance(11 * 3600)
    assert notifications.shown == []
    broker.advance(31 * 60)  # 29 minutes left
    shown = notifications.wait_for(lambda s: "MFA session ends at" in s.title)
    assert "ends in 29 min" in shown.body and "rolebroker login dev" in shown.body and "dev, prod" in shown.body
    broker.advance(60)
    assert len([s for s in notifications.shown if "ends at" in s.title]) == 1  # once per session


def test_a_failing_mfa_process_is_announced(tmp_path: Path, notifications: NotificationServer) -> None:
    layout = {"credentials": f"[alice]\naws_access_key_id = {ALICE_KEY}\naws_secret_access_key = {ALICE_SECRET}\n",
              "config": CONFIG_LAYOUT["config"].replace(f"mfa_serial = {MFA_SERIAL}\n",
                                                        f"mfa_serial = {MFA_SERIAL}\nmfa_process = exit 3\n")}
    broker = start_broker(tmp_path, layout)
    try:
        status, _, body = broker.get_settled("dev")
        assert status == 403 and "mfa_process exited with status 3" in body["message"]
        shown = notifications.wait_for(lambda s: "mfa_process failed" in s.title)
        assert "exited with status 3" in shown.body and "rolebroker login dev" in shown.body
    finally:
        broker.stop()


def test_sts_failing_until_credentials_run_out_is_announced(
        broker: Broker, notifications: NotificationServer) -> None:
    broker.login("dev")
    status, _, body = broker.get_settled("dev")
    assert status == 200
    broker.sts.inject_fault("AssumeRole", "throttling", times=10_000)
    for _ in range(50):  # minutes of an outage, clients asking all along
        broker.advance(60)
        assert broker.raw_get("dev", broker.token("dev"))[0] == 200
        broker.call(broker.daemon.attention.notifier.flush())
        if any("credentials for dev run out" in s.title for s in notifications.shown):
            break
    shown = notifications.wait_for(lambda s: "credentials for dev run out at" in s.title, timeout=5)
    assert "STS keeps failing" in shown.body and "Throttl" in shown.body
    broker.advance(60)
    broker.call(broker.daemon.attention.notifier.flush())
    assert len([s for s in notifications.shown if "credentials for dev" in s.title]) == 1  # once per set


def test_no_notification_server_is_logged_once_and_breaks_nothing(
        broker: Broker, session_bus: SessionBus, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="rolebroker.notify")
    assert refused(broker) < 1.0
    broker.advance(NOTIFY_EVERY + 1)
    assert refused(broker) < 1.0
    broker.settle()
    broker.call(broker.daemon.attention.notifier.flush())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "notifications are off" in r.message]
    assert len(warnings) == 1, caplog.text
    broker.login("dev")
    assert broker.get_settled("dev")[0] == 200


# ---- the dialog -------------------------------------------------------------------------------

DIALOG = "rolebroker: MFA code for dev"


@needs("Xvfb", "zenity", "xdotool", "import")
def test_zenity_dialog_takes_the_code_and_the_next_call_is_served(
        tmp_path: Path, display: Display, notifications: NotificationServer) -> None:
    broker = start_broker(tmp_path, with_prompt("zenity"))
    try:
        assert refused(broker) < 1.0  # the SDK is not held while the dialog waits for a human
        window = display.wait_for_window(DIALOG)
        assert refused(broker) < 1.0
        assert len(display.windows(DIALOG)) == 1  # one dialog per MFA device, never two
        picture = tmp_path / "mfa-dialog.png"
        display.screenshot(window, picture)
        assert picture.stat().st_size > 1000
        if SCREENSHOT_DIR:
            shutil.copy(picture, Path(SCREENSHOT_DIR) / "mfa-dialog.png")
        shown = notifications.wait_for(lambda s: "dev needs an MFA code" in s.title)
        assert shown.actions == ["login", "Log in"] and "dialog" in shown.body

        code = broker.next_code()
        display.type_into(window, f"{code[:3]} {code[3:]}")
        notifications.wait_for(lambda s: "logged in to dev" in s.title)
        assert broker.caller_arn("dev").startswith("arn:aws:sts::222222222222:assumed-role/dev/")  # boto3
        assert broker.sts.used_codes() == [code]
        assert code not in texts(notifications)
    finally:
        broker.stop()


@needs("Xvfb", "zenity", "xdotool")
def test_a_cancelled_dialog_waits_before_asking_and_the_log_in_action_opens_it(
        tmp_path: Path, display: Display, notifications: NotificationServer) -> None:
    broker = start_broker(tmp_path, with_prompt("zenity"))
    try:
        refused(broker)
        window = display.wait_for_window(DIALOG)
        display.press(window, "Escape")
        broker.call(_dialog_closed(broker))
        refused(broker)
        assert not broker.daemon.attention._asking  # cancelled: not asked again so soon
        broker.advance(CANCEL_QUIET + 1)
        refused(broker)
        window = display.wait_for_window(DIALOG)
        display.press(window, "Escape")
        broker.call(_dialog_closed(broker))

        # The notification's "Log in" button opens it at once, quiet period or not.
        shown = notifications.wait_for(lambda s: "needs an MFA code" in s.title and s.actions == ["login", "Log in"])
        notifications.invoke(shown, "login")
        window = display.wait_for_window(DIALOG)
        display.type_into(window, "12345")  # not six digits: the dialog asks again, nothing is sent
        window = display.wait_for_window("rolebroker: MFA code for dev - try again")
        code = broker.next_code()
        display.type_into(window, code)
        notifications.wait_for(lambda s: "logged in to dev" in s.title)
        assert broker.sts.used_codes() == [code]
        assert broker.get_settled("dev")[0] == 200
    finally:
        broker.stop()


async def _dialog_closed(broker: Broker) -> None:
    """Wait (bounded) for the daemon to take in that the dialog is gone."""
    import asyncio

    tasks = list(broker.daemon.attention._asking.values())
    if tasks:
        await asyncio.wait(tasks, timeout=20)
    assert not broker.daemon.attention._asking


def test_a_failing_renewal_is_announced(tmp_path: Path, notifications: NotificationServer) -> None:
    code_file = tmp_path / "code"
    layout = {"credentials": CONFIG_LAYOUT["credentials"],
              "config": CONFIG_LAYOUT["config"].replace(
                  f"mfa_serial = {MFA_SERIAL}\n", f"mfa_serial = {MFA_SERIAL}\nmfa_process = cat {code_file}\n")}
    broker = start_broker(tmp_path, layout)
    try:
        code_file.write_text(broker.code() + "\n")  # what the YubiKey shows now
        assert broker.get_settled("dev")[0] == 200
        code_file.unlink()  # the key is unplugged: the renewal 45 min ahead of the end fails
        broker.advance(12 * 3600 - 40 * 60)
        shown = notifications.wait_for(lambda s: "renewing the MFA session failed" in s.title)
        assert "mfa_process exited with status 1" in shown.body and "rolebroker login alice" in shown.body
    finally:
        broker.stop()


def test_an_unknown_dialog_program_is_a_config_error_naming_the_choices(tmp_path: Path) -> None:
    broker = start_broker(tmp_path, with_prompt("xmessage"))
    try:
        rows = {r["profile"]: r for r in broker.control().request("GET", "/v1/status")["profiles"]}
        assert "rolebroker_mfa_prompt = 'xmessage'" in rows["dev"]["config_error"]
        assert "zenity, kdialog, osascript" in rows["dev"]["config_error"]
    finally:
        broker.stop()


@needs("Xvfb", "zenity", "xdotool")
def test_the_dialog_asks_before_the_session_ends_and_renews_it(
        tmp_path: Path, display: Display, notifications: NotificationServer,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="rolebroker")
    broker = start_broker(tmp_path, with_prompt("zenity"))
    try:
        first = broker.next_code()
        broker.login("dev", first)
        broker.advance(12 * 3600 - 29 * 60)
        window = display.wait_for_window("rolebroker: MFA code for alice")  # the session's own profile
        shown = notifications.wait_for(lambda s: "MFA session ends at" in s.title)
        assert "dialog" in shown.body
        code = broker.next_code()
        display.type_into(window, code)
        notifications.wait_for(lambda s: "logged in to alice" in s.title)
        assert broker.sts.used_codes() == [first, code]
        broker.advance(60 * 60)  # past the old session's end: the new one serves
        assert broker.get_settled("dev")[0] == 200
        assert code not in caplog.text and code not in texts(notifications)
    finally:
        broker.stop()


@needs("Xvfb", "zenity", "xdotool")
def test_a_code_sts_rejects_in_the_dialog_is_asked_again_and_sent_once(
        tmp_path: Path, display: Display, notifications: NotificationServer) -> None:
    broker = start_broker(tmp_path, with_prompt("zenity"))
    try:
        refused(broker)
        window = display.wait_for_window(DIALOG)
        code = broker.next_code()
        wrong = "000000" if code != "000000" else "111111"
        display.type_into(window, wrong)
        window = display.wait_for_window(f"{DIALOG} - try again")  # says STS's reason, asks again
        display.type_into(window, code)
        notifications.wait_for(lambda s: "logged in to dev" in s.title)
        assert broker.sts.used_codes() == [code]  # the wrong one failed; each went to STS once
        assert [c.params.get("TokenCode") for c in broker.sts.calls if c.action == "GetSessionToken"] == [wrong, code]
    finally:
        broker.stop()


def test_dialog_programs_get_texts_as_arguments_and_never_a_code() -> None:
    from rolebroker.broker.prompt import dialog_argv

    for program in ("zenity", "kdialog", "osascript"):
        argv = dialog_argv(program, "rolebroker: MFA code for dev", 'device "x"; do shell script "id"')
        assert argv[0] == program
        assert 'device "x"; do shell script "id"' in argv  # an argument, not spliced into a script
        assert not any(part.isdigit() and len(part) == 6 for part in argv)
    with pytest.raises(ValueError):
        dialog_argv("xmessage", "t", "x")


@needs("zenity")
def test_a_daemon_without_a_display_says_how_to_give_it_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A systemd user service whose manager never got DISPLAY: the log says what to run."""
    caplog.set_level(logging.INFO, logger="rolebroker")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    broker = start_broker(tmp_path, with_prompt("zenity"))
    try:
        assert refused(broker) < 1.0
        broker.call(_dialog_closed(broker))
        lines = [r.getMessage() for r in caplog.records if "the MFA dialog cannot open" in r.getMessage()]
        assert len(lines) == 1 and "systemctl --user import-environment DISPLAY" in lines[0], lines
        assert refused(broker) < 1.0
        broker.call(_dialog_closed(broker))
        assert len([r for r in caplog.records if "the MFA dialog cannot open" in r.getMessage()]) == 1  # quiet after
    finally:
        broker.stop()


def test_osascript_and_kdialog_are_run_as_macos_and_kde_would(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a Mac or KDE here: stand-ins on PATH that record their argv and answer as the
    real programs do (the typed text on stdout, exit 1 for Cancel)."""
    import asyncio
    import json

    from rolebroker.broker.notify import Notice, OsascriptNotifier
    from rolebroker.broker.prompt import ProgramPrompt

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for program in ("osascript", "kdialog"):
        stand_in = bin_dir / program
        stand_in.write_text(f"#!/usr/bin/python3\nimport json, sys\n"
                            f"open({str(tmp_path / program)!r} + '.argv', 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
                            f"answer = open({str(tmp_path / 'answer')!r}).read()\n"
                            "sys.exit(1) if answer == 'cancel' else print(answer)\n")
        stand_in.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("DISPLAY", ":99")  # kdialog asks for a display; the stand-in needs none

    async def scenario() -> list[str | None]:
        notifier = OsascriptNotifier()
        notifier.show(Notice("k", "rolebroker: dev needs an MFA code", 'run "rolebroker login dev"'))
        await notifier.flush()
        answers: list[str | None] = []
        for program, answer in (("osascript", "123 456"), ("kdialog", "654321"), ("kdialog", "cancel")):
            (tmp_path / "answer").write_text(answer)
            answers.append(await ProgramPrompt(program).ask("rolebroker: MFA code for dev", "Enter the code"))
        return answers

    assert asyncio.run(scenario()) == ["123 456", "654321", None]
    osascript = [json.loads(line) for line in (tmp_path / "osascript.argv").read_text().splitlines()]
    assert osascript[0][-2:] == ["rolebroker: dev needs an MFA code", 'run "rolebroker login dev"']
    assert "display notification (item 2 of argv)" in " ".join(osascript[0])  # texts are arguments, not script
    assert osascript[1][-2:] == ["rolebroker: MFA code for dev", "Enter the code"]
    kdialog = json.loads((tmp_path / "kdialog.argv").read_text().splitlines()[0])
    assert kdialog == ["--title", "rolebroker: MFA code for dev", "--inputbox", "Enter the code"]
