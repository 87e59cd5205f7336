"""The ``sarveg`` console command.

Subcommands live in ``sarveg``, ``training`` and ``serving`` and are found through the
``sarveg.commands`` entry-point group, so the core package never imports torch or bentoml.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points

USAGE = "usage: sarveg COMMAND [ARGS...]  (sarveg COMMAND --help for details)"


def list_commands() -> dict[str, str]:
    """Return the installed subcommands as ``{name: "module:function"}``."""
    return {ep.name: ep.value for ep in entry_points(group="sarveg.commands")}


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``sarveg COMMAND ARGS`` to the command's ``main(argv)``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {ep.name: ep for ep in entry_points(group="sarveg.commands")}
    if not argv or argv[0] in {"-h", "--help"}:
        print(USAGE)
        print("commands: " + ", ".join(sorted(commands)))
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in commands:
        print(
            f"sarveg: unknown command {name!r}; expected one of {sorted(commands)}", file=sys.stderr
        )
        return 2
    result = commands[name].load()(rest)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
