"""`jaula completion bash|zsh|fish`: the shell completion script (click's), to source from the
shell's startup file:

    bash:  eval "$(jaula completion bash)"            (in ~/.bashrc)
    zsh:   eval "$(jaula completion zsh)"             (in ~/.zshrc)
    fish:  jaula completion fish | source             (in ~/.config/fish/completions/jaula.fish)
"""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

SHELLS = ("bash", "zsh", "fish")


def script(cli: click.Command, shell: str, prog: str = "jaula") -> str:
    cls = get_completion_class(shell)
    if cls is None:
        raise click.BadParameter(f"{shell!r}: use one of {', '.join(SHELLS)}")
    return cls(cli, {}, prog, "_" + prog.upper().replace("-", "_") + "_COMPLETE").source()


def register(cli: click.Group) -> None:
    @cli.command()
    @click.argument("shell", type=click.Choice(SHELLS))
    def completion(shell: str) -> None:
        """Print the completion script for SHELL. Load it with
        `eval "$(jaula completion bash)"` in ~/.bashrc (zsh: the same in ~/.zshrc; fish:
        `jaula completion fish | source`)."""
        click.echo(script(cli, shell))
