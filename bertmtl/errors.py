"""The one error type users see: a clear message, exit code 2, no traceback."""

import click


class UserError(click.ClickException):
    """A problem with the user's input or environment (bad file, missing weights, ...).

    Subclassing ClickException lets library code raise it and every CLI surface print it
    as `Error: <message>` with exit code 2, without a traceback.
    """

    exit_code = 2


class ConfigError(UserError, ValueError):
    """An option's value that it does not take. A ValueError to Python callers, whose message names the
    field (`lr must be > 0`); the command line prints it naming the flag (`Error: --lr must be > 0`,
    exit code 2), through Click's format_message."""

    def __init__(self, field: str, problem: str, flag: str | None = None, sep: str = " "):
        self.field, self.problem, self.sep = field, problem, sep
        self.flag = flag or "--" + field.replace("_", "-")
        super().__init__(f"{field}{sep}{problem}")

    def format_message(self) -> str:
        return f"{self.flag}{self.sep}{self.problem}"

    def __reduce__(self):  # picklable (process pools, Optuna workers): rebuilt from its parts
        return _rebuilt, (type(self), self.__dict__)


class UnknownOption(ConfigError, TypeError):
    """A keyword no field has (`TrainConfig(lrr=1)`): a TypeError as Python's own would be, with the
    closest field names suggested."""

    def __init__(self, cls_name: str, name: str, known):
        import difflib

        close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(close)}?" if close else f"; {cls_name}'s fields are listed by help({cls_name})"
        super().__init__(name, f"is not an option of {cls_name}{hint}")


def _rebuilt(cls, state: dict):
    error = Exception.__new__(cls)
    Exception.__init__(error, state.get("message"))
    error.__dict__.update(state)
    return error


def extra_hint(extra: str, packages: str) -> str:
    """How to install an optional feature's packages: bertmtl is installed from a clone (the quotes
    keep zsh from expanding the brackets), or the packages alone."""
    return f'pip install -e ".[{extra}]" in the bertmtl clone, or pip install {packages}'
