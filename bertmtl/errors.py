"""The one error type users see: a clear message, exit code 2, no traceback."""

import click


class UserError(click.ClickException):
    """A problem with the user's input or environment (bad file, missing weights, ...).

    Subclassing ClickException lets library code raise it and every CLI surface print it
    as `Error: <message>` with exit code 2, without a traceback.
    """

    exit_code = 2


def extra_hint(extra: str, packages: str) -> str:
    """How to install an optional feature's packages: bertmtl is installed from a clone (the quotes
    keep zsh from expanding the brackets), or the packages alone."""
    return f'pip install -e ".[{extra}]" in the bertmtl clone, or pip install {packages}'
