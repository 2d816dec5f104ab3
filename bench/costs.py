#!/usr/bin/env python3
"""Start-up costs that do not depend on how busy the machine is (issue 15).

    python bench/costs.py [--no-valgrind]

Wall-clock numbers on a shared machine move with everyone else's work; these do not:

- modules each process imports (`python -X importtime`, one line per module);
- instructions each process executes (valgrind's cachegrind, when installed: `apt-get
  install valgrind`; `perf stat` needs hardware counters that VMs often hide);
- the daemon's resident memory right after its first answer.

Measured: `python -c pass` on the interpreter the console script runs on;
`rolebroker credential-process`, `env` and `status` against a running daemon; and a
daemon from exec to its first answer on the credentials endpoint (then SIGTERM). Compare
the numbers of two commits on the same machine, not against another machine's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402 - bench/run.py: the same isolation and process helpers

VALGRIND_TIMEOUT = 300.0  # a daemon under cachegrind starts some 30 times slower
KEYS = "aws_access_key_id = AKIAEXAMPLE000000001\naws_secret_access_key = not-a-real-secret\n"


def modules(command: list[str], env: dict[str, str]) -> int:
    done = subprocess.run([command[0], "-X", "importtime", *command[1:]], env=env, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL, check=False)
    return sum(1 for line in done.stderr.splitlines() if line.startswith("import time:"))


def instructions_of(stderr: str) -> int | None:
    match = re.search(r"I\s+refs:\s+([\d,]+)", stderr)
    return int(match.group(1).replace(",", "")) if match else None


def instructions(command: list[str], env: dict[str, str]) -> int | None:
    done = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
                           *command], env=env, capture_output=True, text=True, timeout=VALGRIND_TIMEOUT,
                          stdin=subprocess.DEVNULL, check=False)
    return instructions_of(done.stderr)


def daemon_env(root: Path, **extra: str) -> dict[str, str]:
    """A config with one role that needs no human, its STS endpoint closed (nothing is called)."""
    aws = root / "aws"
    aws.mkdir(parents=True)
    (aws / "credentials").write_text(f"[alice]\n{KEYS}")
    (aws / "credentials").chmod(0o600)
    (aws / "config").write_text("[profile solo]\nrole_arn = arn:aws:iam::222222222222:role/solo\n"
                                f"source_profile = alice\nregion = eu-west-1\nendpoint_url = http://{bench.HOST}:9\n")
    return bench.isolated_env(root, AWS_CONFIG_FILE=str(aws / "config"),
                              AWS_SHARED_CREDENTIALS_FILE=str(aws / "credentials"), **extra)


def daemon_start(cli: bench.Cli, root: Path, logs: Path, prefix: list[str], **extra: str) -> tuple[str, int]:
    """Start `rolebroker serve` (behind `prefix`), wait for its first answer, stop it:
    its log and its VmRSS (KiB) at the first answer."""
    env = daemon_env(root, **extra)
    port = bench.free_port()
    with bench.running(root.name, [*prefix, cli.executable, "serve", "--port", str(port)], env, port, logs) as server:
        bench.first_answer(server, "/v1/credentials/solo", None, timeout=VALGRIND_TIMEOUT)
        rss = bench.memory_kib(int(json.loads((root / "run" / "daemon.json").read_text())["pid"]))["VmRSS"]
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(VALGRIND_TIMEOUT)
    return server.log_path.read_text(errors="replace"), rss


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="load-independent start-up costs (see bench/README.md)")
    parser.add_argument("--no-valgrind", action="store_true", help="module counts and memory only")
    args = parser.parse_args(argv)
    use_valgrind = not args.no_valgrind and shutil.which("valgrind") is not None
    if not args.no_valgrind and not use_valgrind:
        bench.note("valgrind is not installed (apt-get install valgrind): no instruction counts")
    cli = bench.find_cli()
    rows: list[tuple[str, int, int | None]] = []
    with tempfile.TemporaryDirectory(prefix="rolebroker-costs-") as temp, contextlib.ExitStack() as stack:
        work = Path(temp)
        logs = work / "logs"
        logs.mkdir()
        env = bench.isolated_env(work / "demo")
        port = bench.free_port()
        server = stack.enter_context(bench.running("demo", [cli.executable, "serve", "--demo", "--port", str(port)],
                                                   env, port, logs))
        bench.first_answer(server, "/v1/credentials/dev", None)
        cli.check(["login", "dev", "--code", "123456"], env)
        script = [cli.interpreter, cli.executable]  # the console script, as its shebang runs it
        for label, command in (("`python -c pass`", [cli.interpreter, "-c", "pass"]),
                               ("`rolebroker credential-process dev`", [*script, "credential-process", "dev"]),
                               ("`rolebroker env dev`", [*script, "env", "dev"]),
                               ("`rolebroker status`", [*script, "status"])):
            subprocess.run(command, env=env, capture_output=True, timeout=60, check=False)  # writes .pyc files
            bench.note(f"measuring {label}")
            rows.append((label, modules(command, env), instructions(command, env) if use_valgrind else None))

        bench.note("measuring a daemon from exec to its first answer")
        daemon_start(cli, work / "warm", logs, [])  # writes .pyc files
        imports_log, _ = daemon_start(cli, work / "imports", logs, [], PYTHONPROFILEIMPORTTIME="1")
        daemon_modules = sum(1 for line in imports_log.splitlines() if line.startswith("import time:"))
        daemon_instructions = None
        if use_valgrind:
            log, _ = daemon_start(cli, work / "valgrind", logs, ["valgrind", "--tool=cachegrind", "--cache-sim=no",
                                                                  "--cachegrind-out-file=/dev/null"])
            daemon_instructions = instructions_of(log)
        _, rss = daemon_start(cli, work / "rss", logs, [])
    base = rows[0][2]

    def million(count: int | None) -> str:
        if count is None:
            return "-"
        return f"{count / 1e6:,.0f} M" + (f" ({count / base:.2f}x)" if base else "")

    lines = ["| process | modules imported | instructions |", "| --- | ---: | ---: |"]
    lines += [f"| {label} | {count} | {million(executed)} |" for label, count, executed in rows]
    lines.append(f"| daemon: exec to first answer, then SIGTERM | {daemon_modules} | {million(daemon_instructions)} |")
    lines += ["", f"Daemon VmRSS at its first answer: {rss / 1024:.1f} MiB. Commit: "
              f"{subprocess.run(['git', '-C', str(bench.REPO_DIR), 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True, check=False).stdout.strip()}; "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
