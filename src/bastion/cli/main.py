"""Entry point: builds the typer app, catches BastionError once, maps verdicts to exit codes."""

from __future__ import annotations

import sys

import typer

from bastion.cli import scan as scan_cli
from bastion.errors import BastionError

app = typer.Typer(
    name="bastion",
    help="Secure the ML model lifecycle: scan model files for code that runs on load.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.command("scan")(scan_cli.scan_command)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    """Bastion: will loading this model run code?  `bastion scan --help` to start."""
    if version:
        from bastion import __version__  # noqa: PLC0415

        typer.echo(__version__)
        raise typer.Exit(0)


def main() -> None:
    """Console-script entry point."""
    try:
        # Without standalone mode click returns the code of a typer.Exit instead of exiting.
        code = app(standalone_mode=False)
    except BastionError as err:
        sys.stderr.write(err.diagnostics() + "\n")
        sys.exit(2)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except Exception as err:  # click usage errors arrive here in non-standalone mode
        import click  # noqa: PLC0415

        if isinstance(err, click.ClickException):
            err.show()
            sys.exit(2)
        raise
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
