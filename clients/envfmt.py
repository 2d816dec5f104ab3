"""Renders the environment that points a process at the broker, in the syntax of the
shell or tool that will read it."""

from __future__ import annotations

import json
import re
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
    # "--env-file" is passed through as a flag (the CLI puts the token in that file).
    words = [f"--env-file {shlex.quote(value)}" if name == "--env-file" else f"-e {shlex.quote(f'{name}={value}')}"
             for name, value in set_vars.items()]
    return " ".join(words) + "\n"


VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def checked(render: Renderer) -> Renderer:
    """Names go into shell code unquoted: refuse anything that is not a plain variable name,
    whoever supplied it."""

    def render_checked(set_vars: Mapping[str, str], unset: Sequence[str]) -> str:
        for name in [*set_vars, *unset]:
            if name != "--env-file" and not VARIABLE_NAME.match(name):
                raise ValueError(f"refusing to print a variable named {name!r}")
        return render(set_vars, unset)

    return render_checked


FORMATS: dict[str, Renderer] = {
    "sh": checked(render_sh),
    "fish": checked(render_fish),
    "powershell": checked(render_powershell),
    "dotenv": checked(render_dotenv),
    "json": checked(render_json),
    "docker": checked(render_docker),
}
