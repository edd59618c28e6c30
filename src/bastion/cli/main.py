"""Entry point: the `bastion` command group; catches BastionError once and exits 2.

Built on click rather than typer: typer 0.29 builds pydantic adapters for every
parameter at start-up (about 3x click's import time), and start-up is most of the
time of a CI scan of one checkpoint.
"""

from __future__ import annotations

import sys

import click

from bastion import __version__
from bastion.cli.policy import policy_group
from bastion.cli.registry import audit_group, gate_group, registry_group
from bastion.cli.scan import scan_command
from bastion.cli.serve import keys_group, models_group, serve_command
from bastion.cli.sign import keygen_command, sign_command, verify_command
from bastion.errors import BastionError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bastion")
def app() -> None:
    """Secure the ML model lifecycle. Start with `bastion scan --help`."""


app.add_command(scan_command)
app.add_command(keygen_command)
app.add_command(sign_command)
app.add_command(verify_command)
app.add_command(registry_group)
app.add_command(gate_group)
app.add_command(audit_group)
app.add_command(policy_group)
app.add_command(serve_command)
app.add_command(keys_group)
app.add_command(models_group)


def main() -> None:
    """Console-script entry point."""
    try:
        code = app.main(standalone_mode=False)
    except BastionError as err:
        sys.stderr.write(err.diagnostics() + "\n")
        sys.exit(2)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.ClickException as err:
        err.show()
        sys.exit(2)
    except (click.Abort, KeyboardInterrupt):
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
