"""``closedloop``: the command line. Each verb lives in ``closedloop/commands/<verb>.py`` and is imported only
when it runs, so ``closedloop --help`` stays fast."""

from __future__ import annotations

import importlib
import pkgutil

import click

import closedloop.commands


def _command_modules() -> dict[str, str]:
    """Command name -> module name: ``time_to_x.py`` is ``time-to-x``; ``import_.py`` is ``import``."""
    return {
        info.name.rstrip("_").replace("_", "-"): info.name
        for info in pkgutil.iter_modules(closedloop.commands.__path__)
        if not info.name.startswith("_")
    }


class _LazyCommands(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_command_modules())

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module_name = _command_modules().get(cmd_name)
        if module_name is None:
            return None
        return importlib.import_module(f"closedloop.commands.{module_name}").command


@click.group(cls=_LazyCommands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="closedloop")
def main() -> None:
    """Closed-loop marketing: which channels bring leads, customers and revenue."""


if __name__ == "__main__":
    main()
