"""``closedloop``: the command line. Each verb lives in ``closedloop/commands/<verb>.py`` and is imported only
when it runs, so ``closedloop --help`` stays fast."""

from __future__ import annotations

import importlib
import pkgutil

import click

import closedloop.commands


class _LazyCommands(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        names = [m.name for m in pkgutil.iter_modules(closedloop.commands.__path__) if not m.name.startswith("_")]
        return sorted(name.replace("_", "-") for name in names)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module_name = cmd_name.replace("-", "_")
        if module_name not in {m.name for m in pkgutil.iter_modules(closedloop.commands.__path__)}:
            return None
        module = importlib.import_module(f"closedloop.commands.{module_name}")
        return module.command


@click.group(cls=_LazyCommands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="closedloop")
def main() -> None:
    """Closed-loop marketing: which channels bring leads, customers and revenue."""


if __name__ == "__main__":
    main()
