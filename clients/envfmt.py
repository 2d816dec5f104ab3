"""Renders the environment that points a process at the broker, in the syntax of the
shell or tool that will read it."""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Mapping, Sequence

Renderer = Callable[[Mapping[str, str], Sequence[str]], str]


def render_sh(set_vars: Mapping[str, str], unset: Sequence[str]) -> str:
    lines = [f"unset {' '.join(unset)};"] if unset else []
    lines += [f"export {name}={shlex.quote(value)};" for name, value in set_vars.items()]
    return "\n".join(lines) + "\n"


def render_fish(set_vars: Mapping[str, str], unset: Sequence[str]) -> str:
    lines = [f"set -e {name};" for name in unset]
    lines += [f"set -gx {name} {_fish_quote(value)};" for name, value in set_vars.items()]
    return "\n".join(lines) + "\n"


def _fish_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def render_powershell(set_vars: Mapping[str, str], unset: Sequence[str]) -> str:
    lines = [f"Remove-Item Env:{name} -ErrorAction SilentlyContinue" for name in unset]
    lines += [f"$Env:{name} = '{_powershell_quote(value)}'" for name, value in set_vars.items()]
    return "\n".join(lines) + "\n"


def _powershell_quote(value: str) -> str:
    # PowerShell ends a '...' string at the typographic single quotes too; doubling escapes each.
    for quote in ("'", "\u2018", "\u2019", "\u201a", "\u201b"):
        value = value.replace(quote, quote * 2)
    return value


def render_dotenv(set_vars: Mapping[str, str], unset: Sequence[str]) -> str:
    # docker's env-file grammar takes the rest of the line verbatim: no quotes, no newlines.
    for name, value in set_vars.items():
        if "\n" in value or "\r" in value:
            raise ValueError(f"{name} contains a line break and cannot go in an env file")
    return "".join(f"{name}={value}\n" for name, value in set_vars.items())


def render_json(set_vars: Mapping[str, str], unset: Sequence[str]) -> str:
    return json.dumps({"set": dict(set_vars), "unset": list(unset)}, indent=2) + "\n"


def render_docker(set_vars: Mapping[str, str], unset: Sequence[str]) -> str:
    return " ".join(f"-e {shlex.quote(f'{name}={value}')}" for name, value in set_vars.items()) + "\n"


FORMATS: dict[str, Renderer] = {
    "sh": render_sh,
    "fish": render_fish,
    "powershell": render_powershell,
    "dotenv": render_dotenv,
    "json": render_json,
    "docker": render_docker,
}
