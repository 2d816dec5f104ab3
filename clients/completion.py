"""`rolebroker completion bash|zsh|fish`: shell completion for commands, options and the
profile names of the user's AWS config.

The scripts are generated from the CLI's own argparse parser, so a new option completes
without anyone editing a script. Profile names are listed at completion time by
`rolebroker completion --profiles`, which reads the config files with the standard
library (no daemon, no boto3: it must answer while the user waits at a prompt).
"""

from __future__ import annotations

import argparse
import configparser
import os
import shlex
from dataclasses import dataclass, field

# Commands whose first positional argument is a profile name.
PROFILE_COMMANDS = ("login", "logout", "env", "exec", "credential-process", "console")


@dataclass
class Command:
    name: str
    options: list[str] = field(default_factory=list)
    words: list[str] = field(default_factory=list)  # sub-actions or fixed choices of the first argument
    takes_profile: bool = False


def describe(parser: argparse.ArgumentParser) -> tuple[list[str], list[Command]]:
    """The top-level options, and each command with what completes after it."""
    top = [o for a in parser._actions for o in a.option_strings]  # noqa: SLF001 (argparse has no public walk)
    commands: list[Command] = []
    for action in parser._actions:  # noqa: SLF001
        if not isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            continue
        for name, sub in action.choices.items():
            command = Command(name, takes_profile=name in PROFILE_COMMANDS)
            for sub_action in sub._actions:  # noqa: SLF001
                command.options += sub_action.option_strings
                if isinstance(sub_action, argparse._SubParsersAction):  # noqa: SLF001
                    command.words += list(sub_action.choices)
                    for action_parser in sub_action.choices.values():  # `token create --profile ...`
                        command.options += [o for a in action_parser._actions for o in a.option_strings  # noqa: SLF001
                                            if o not in command.options]
                elif not sub_action.option_strings and sub_action.choices:
                    command.words += [str(c) for c in sub_action.choices]
            commands.append(command)
    return top, commands


def profile_names() -> list[str]:
    """Profile names in the AWS config and credentials files, as botocore names them."""
    names: dict[str, None] = {}
    config = os.environ.get("AWS_CONFIG_FILE") or os.path.expanduser("~/.aws/config")
    credentials = os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or os.path.expanduser("~/.aws/credentials")
    for path, prefixed in ((config, True), (credentials, False)):
        parser = configparser.RawConfigParser(strict=False, interpolation=None)
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, OSError, UnicodeDecodeError):
            continue  # completion offers what it can read; `rolebroker status` explains the rest
        for section in parser.sections():
            if prefixed and section.startswith("profile "):
                names[section[len("profile "):].strip()] = None
            elif section == "default" or not prefixed:
                names[section.strip()] = None
    return [name for name in names if name and not any(c.isspace() for c in name)]


def bash(parser: argparse.ArgumentParser) -> str:
    top, commands = describe(parser)
    cases = "\n".join(
        f"        {shlex.quote(c.name)}) options={shlex.quote(' '.join(c.options))}; "
        f"words={shlex.quote(' '.join(c.words))}; profiles={1 if c.takes_profile else 0} ;;"
        for c in commands)
    names = " ".join(c.name for c in commands)
    return f"""# rolebroker completion for bash (and zsh through bashcompinit)
_rolebroker() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" options="" words="" profiles=0
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=($(compgen -W {shlex.quote(names + ' ' + ' '.join(top))} -- "$cur"))
        return
    fi
    case "${{COMP_WORDS[1]}}" in
{cases}
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$options" -- "$cur"))
    elif [ "$COMP_CWORD" -eq 2 ] && [ -n "$words" ]; then
        COMPREPLY=($(compgen -W "$words" -- "$cur"))
    elif [ "$profiles" -eq 1 ]; then
        COMPREPLY=($(compgen -W "$(rolebroker completion --profiles 2>/dev/null)" -- "$cur"))
    fi
}}
complete -F _rolebroker rolebroker
"""


def zsh(parser: argparse.ArgumentParser) -> str:
    return "# rolebroker completion for zsh\nautoload -U +X bashcompinit && bashcompinit\n" + bash(parser)


def fish(parser: argparse.ArgumentParser) -> str:
    top, commands = describe(parser)
    lines = ["# rolebroker completion for fish", "complete -c rolebroker -f"]
    names = " ".join(c.name for c in commands)
    lines.append(f"complete -c rolebroker -n __fish_use_subcommand -a {shlex.quote(names)}")
    for option in top:
        if option.startswith("--"):
            lines.append(f"complete -c rolebroker -n __fish_use_subcommand -l {option[2:]}")
    for command in commands:
        seen = f"__fish_seen_subcommand_from {command.name}"
        if command.words:
            lines.append(f"complete -c rolebroker -n {shlex.quote(seen)} -a {shlex.quote(' '.join(command.words))}")
        if command.takes_profile:
            lines.append(f"complete -c rolebroker -n {shlex.quote(seen)} -a '(rolebroker completion --profiles)'")
        for option in command.options:
            if option.startswith("--"):
                lines.append(f"complete -c rolebroker -n {shlex.quote(seen)} -l {option[2:]}")
    return "\n".join(lines) + "\n"


SHELLS = {"bash": bash, "zsh": zsh, "fish": fish}
