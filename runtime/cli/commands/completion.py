"""``icrt completion bash|zsh|tcsh``: a shell completion script for ``icrt``, generated from its own parser by shtab
(every command, option and choice; files and folders where a path goes)."""
from __future__ import annotations

import sys

from icrt.runtime.base.errors import EXIT_OK
from icrt.runtime.cli.command import Command

SHELLS = ("bash", "zsh", "tcsh")


def arguments(p) -> None:
    p.add_argument("shell", choices=SHELLS, help="the shell to complete in")


def run(args) -> int:
    from icrt.runtime.base.errors import UnavailableError

    try:
        import shtab
    except ImportError:
        from icrt.runtime.base.install import pip_line

        raise UnavailableError(f"icrt completion needs shtab, an icrt dependency missing here: {pip_line()}") from None
    sys.stdout.write(shtab.complete(args.root_parser, shell=args.shell))
    return EXIT_OK


COMMAND = Command(
    "completion", help="print a shell completion script (bash, zsh, tcsh)",
    description="Print a completion script for icrt's commands, options and choices.",
    examples=(("icrt completion bash > ~/.local/share/bash-completion/completions/icrt", "(bash, per user)"),
              ("icrt completion zsh > ~/.zfunc/_icrt", "(zsh: with fpath+=(~/.zfunc) before compinit)"),
              ("source <(icrt completion bash)", "(this shell only)")),
    arguments=arguments, run=run)
