"""The ``mlcomp`` command: a click group whose subcommands live one module each in this package.

User errors (:class:`mlcomp.errors.MlcompError`) are printed without a traceback and exit with
their ``exit_code``; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import importlib
import sys

import click

from mlcomp.errors import MlcompError

__all__ = ["cli", "main"]

# command name -> "module:attribute"; modules are imported only when their command runs,
# so `mlcomp --help` and `mlcomp run` do not pay for the web layer or the database.
COMMANDS = {
    "run": "mlcomp.cli.run:run",
    "tune": "mlcomp.cli.tune:tune",
    "model": "mlcomp.cli.model:model",
    "trace": "mlcomp.cli.trace:trace",
    "dag": "mlcomp.cli.dag:dag",
    "task": "mlcomp.cli.task:task",
    "computer": "mlcomp.cli.computer:computer",
    "queue": "mlcomp.cli.queue:queue",
    "db": "mlcomp.cli.db:db",
    "server": "mlcomp.cli.server:server",
    "worker": "mlcomp.cli.worker:worker",
}


class LazyGroup(click.Group):
    """A group that imports a subcommand's module when the subcommand is looked up (click docs,
    "Lazily Loading Subcommands")."""

    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name].split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as e:
            if e.name == module:  # not built yet
                return None
            raise


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mlcomp")
def cli():
    """mlcomp: run DAGs of deep-learning tasks on your GPU servers."""


def main(argv=None):
    """Entry point of the ``mlcomp`` console script."""
    try:  # without standalone mode click returns a raised Exit's code instead of exiting
        code = cli.main(args=argv, prog_name="mlcomp", standalone_mode=False)
    except MlcompError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
