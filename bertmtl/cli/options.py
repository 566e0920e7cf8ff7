"""Click options generated from a command's `Options` dataclass (configuration/options.py): one per field, plus
`--config FILE` and `--print-config` for every command that has them. Imports no torch."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import click

from ..configuration.options import Options, default_of, dump_options, flag_name, read_options_file
from ..encoders import BUILTIN_NAMES
from ..numbers import number_problem


class FiniteFloat(click.FloatRange):
    """A float option that must be finite and within an optional range (a usage error naming the
    option otherwise). click.FloatRange alone lets NaN through (every comparison with NaN is
    False) and inf through a range without an upper bound. Every float option of every command
    uses this type; the same rule checks config files and Python callers (numbers.py number_problem)."""

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        if problem := number_problem(number):  # beyond float32
            self.fail(f"{value!r}: {problem}.", param, ctx)
        return super().convert(number, param, ctx)


def parsed(fn, value, param_hint=None):
    """Run a parser, turning its ValueError into a usage error on the option."""
    try:
        return fn(value)
    except ValueError as e:
        # Quoted, as Click names the options of its own errors.
        raise click.BadParameter(str(e), param_hint=f"'{param_hint}'" if param_hint else None) from None


def _click_type(f: dataclasses.Field):
    m = f.metadata
    if m["parse"]:  # a list spelled as text (rows, report_to): its parser checks the choices
        return str
    if m["choices"]:
        return click.Choice(m["choices"])
    if m["path"]:
        kind = m["path"]
        return click.Path(file_okay=kind.endswith("file"), dir_okay=kind.endswith("dir"),
                          exists=kind.startswith("existing"), path_type=str)
    if m["type"] is int and (m["min"] is not None or m["max"] is not None):
        return click.IntRange(m["min"], m["max"], min_open=m["min_open"], max_open=m["max_open"])
    if m["type"] is float:  # finite, even without a range
        return FiniteFloat(m["min"], m["max"], min_open=m["min_open"], max_open=m["max_open"])
    return m["type"]


def complete_runs(ctx: click.Context, param, incomplete: str) -> list:
    """Shell completion of a run: the runs under the runs root (--runs-dir, else $BERTMTL_RUNS,
    else ./checkpoints) as paths, and directories as the shell completes them."""
    from click.shell_completion import CompletionItem

    from ..runs.catalog import run_dirs, runs_root

    root = runs_root((ctx.params or {}).get("runs_dir"))
    try:
        runs = sorted(str(p) for p in run_dirs(root))
    except OSError:  # an unreadable runs root: directories only
        runs = []
    # A run completes from its path or its bare name. Directories only where no run matches:
    # bash's completion script drops every name once a directory item comes.
    found = [CompletionItem(r) for r in runs if r.startswith(incomplete) or Path(r).name.startswith(incomplete)]
    return found or [CompletionItem(incomplete, type="dir")]


def _complete_from(values, comma_list: bool = False, dirs: bool = False):
    """Shell completion from fixed values (the last item of a comma list with `comma_list`);
    directories where none matches with `dirs`."""
    def complete(ctx: click.Context, param, incomplete: str) -> list:
        from click.shell_completion import CompletionItem

        done, _, last = incomplete.rpartition(",") if comma_list else ("", "", incomplete)
        prefix = f"{done}," if done else ""
        items = [CompletionItem(prefix + v) for v in values if v.startswith(last)]
        return items or ([CompletionItem(incomplete, type="dir")] if dirs else [])  # see complete_runs
    return complete


# Fields whose values complete from more than their type says: the built-in encoders beside
# directories, run directories for checkpoints.
COMPLETIONS = {"encoder": _complete_from(BUILTIN_NAMES, dirs=True), "checkpoint": complete_runs,
               "source": complete_runs, "init_heads_from": complete_runs}


def _completion(f: dataclasses.Field):
    """The shell completion of a field's option, where its Click type does not give one."""
    if f.name in COMPLETIONS:
        return COMPLETIONS[f.name]
    if f.metadata["parse"] and f.metadata["choices"]:  # a comma list of choices spelled as text
        return _complete_from(f.metadata["choices"], comma_list=True)
    return None


def field_option(f: dataclasses.Field, default=dataclasses.MISSING, help: str | None = None):
    """The Click option (or argument) of one field (with another default and help text where a
    command has its own)."""
    m, name = f.metadata, flag_name(f)
    if help is not None:
        m = {**m, "help": help}
    if m["argument"]:
        if m["multiple"]:
            return click.argument(f.name, nargs=-1, type=str, metavar=m["metavar"])
        return click.argument(f.name, required=m["required"], type=_click_type(f), metavar=m["metavar"],
                              shell_complete=_completion(f))
    names = [f"--{name}", *(f"--{a}" for a in m["aliases"])]
    default = default_of(f) if default is dataclasses.MISSING else default
    if m["flag"] == "on/off":
        return click.option(f"--{name}/--no-{name}", f.name, default=default, show_default=True, help=m["help"])
    if m["flag"] == "on":
        return click.option(*names, f.name, is_flag=True, default=default, help=m["help"])
    if m["multiple"]:
        return click.option(*names, f.name, type=str, multiple=True, metavar=m["metavar"], help=m["help"],
                            shell_complete=_completion(f))
    if isinstance(default, list):
        default = ",".join(map(str, default)) or None  # shown and parsed as text; empty: not given
    elif isinstance(default, dict):
        default = None  # given keys update the default's
    # A required option is checked with the others (Options.validate), so --config may give it too.
    return click.option(*names, f.name, type=_click_type(f), default=default, metavar=m["metavar"],
                        show_default=default is not None, help=m["help"] + ("  [required]" if m["required"] else ""),
                        shell_complete=_completion(f))


class PanelCommand(click.Command):
    """A command whose --help lists its options in panels (`panels`: title -> parameter names, in
    order), then the rest under "Other options"."""

    panels: dict[str, tuple[str, ...]] = {}

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows: dict[str, list] = {title: [] for title in (*self.panels, "Other options")}
        panel_of = {name: title for title, names in self.panels.items() for name in names}
        order = {name: i for names in self.panels.values() for i, name in enumerate(names)}
        for param in sorted(self.get_params(ctx), key=lambda p: order.get(p.name, len(order))):
            record = param.get_help_record(ctx)
            if record is not None and not isinstance(param, click.Argument):  # as click's own list
                rows[panel_of.get(param.name, "Other options")].append(record)
        for title, records in rows.items():
            if records:
                with formatter.section(title):
                    formatter.write_dl(records)


def panels(table: dict[str, tuple[str, ...]]) -> type[PanelCommand]:
    """A PanelCommand class for `@click.command(cls=...)` with these panels."""
    return type("PanelCommand", (PanelCommand,), {"panels": table})


def options_of(cls: type[Options], config_file: bool = True, only: tuple[str, ...] | None = None,
               defaults: dict | None = None, helps: dict | None = None):
    """The options of a command whose settings are `cls`: one per field (those of `only`, with the
    command's own `defaults` and help texts `helps`; the per-file options of `cls.file_options`),
    plus --config FILE and --print-config unless `config_file` is False."""
    defaults, helps = defaults or {}, helps or {}

    def decorate(fn):
        fields = [f for f in dataclasses.fields(cls) if f.metadata["cli"] and (only is None or f.name in only)]
        opts = [field_option(f, defaults.get(f.name, dataclasses.MISSING), helps.get(f.name)) for f in fields]
        opts += [click.option(f"--{key.replace('_', '-')}", key, type=click.Path(dir_okay=False), default=None,
                              help=text) for key, text in getattr(cls, "file_options", ())]
        if config_file:
            opts += [click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True,
                                                                             path_type=str), default=None,
                                  help="Read options from a YAML or JSON file (e.g. --print-config's output); "
                                       "options given on the command line override it."),
                     click.option("--print-config", type=click.Choice(("yaml", "json")), is_flag=False,
                                  flag_value="yaml", default=None,
                                  help="Print the full resolved configuration (yaml, the default, or json) and "
                                       "exit.")]
        for opt in reversed(opts):
            fn = opt(fn)
        return fn
    return decorate


def config_from_options(cls: type[Options], ctx: click.Context, opts: dict, base: dict | None = None):
    """An instance of `cls` from its generated options; with `base` (a saved run, a --config
    file), only options given explicitly override it. The values used are removed from `opts`.

    Options that may not change on resume are checked by the command itself (check_resume).
    """
    from click.core import ParameterSource

    file_keys = [k for k, _ in getattr(cls, "file_options", ())]
    files = {k: opts.pop(k) for k in file_keys if opts.get(k)}
    for k in file_keys:
        opts.pop(k, None)
    cfg = cls() if base is None else cls.from_dict(base, check=False)  # checked by validate(), as overridden
    for name, fl in cls.fields().items():
        if not fl.metadata["cli"] or name not in opts:
            continue
        value = opts.pop(name)
        if base is not None and ctx.get_parameter_source(name) != ParameterSource.COMMANDLINE:
            continue
        if fl.metadata["parse"] is not None:
            if value is None or (fl.metadata["multiple"] and not value):
                continue
            value = parsed(fl.metadata["parse"], value, f"--{flag_name(fl)}")
            if isinstance(value, dict):
                value = {**getattr(cfg, name), **value}
        elif fl.metadata["type"] is list and isinstance(value, tuple):  # an argument's values, as the field holds them
            value = list(value)
        setattr(cfg, name, value)
    if files:
        cfg.files = {**cfg.files, **files}
    return cfg


def resolved_options(cls: type[Options], ctx: click.Context, opts: dict, saved: dict | None = None,
                     defaults: dict | None = None):
    """The command's settings: its `defaults` < `saved` (a run's) < --config FILE < the command line,
    validated; with --print-config, printed instead (and the command exits)."""
    config_file, print_config = opts.pop("config_file", None), opts.pop("print_config", None)
    base = saved if saved is not None else ({**cls().to_dict(), **defaults} if defaults else None)
    if config_file is not None:
        base = {**(base or cls().to_dict()), **read_options_file(cls, config_file)}
    cfg = config_from_options(cls, ctx, opts, base)
    if base is not None:
        # A method's options that came from a saved run (runs of sweeps before this check kept the
        # base's --cagrad-c whatever their --combine) or from a file whose method the command line
        # replaces apply to nothing here: back to their defaults. Those given on the command line
        # (and a file's own, with its method) are checked.
        from click.core import ParameterSource

        given = {n for n in cls.fields() if ctx.get_parameter_source(n) == ParameterSource.COMMANDLINE}
        cfg.reset_unselected(keep={n for n, f in cls.fields().items()
                                   if n in given or saved is None and (f.metadata.get("only_for") or ("",))[0]
                                   not in given})
    cfg.validate()
    if print_config:
        click.echo(dump_options(cfg.to_dict(), print_config), nl=False)
        ctx.exit(0)
    return cfg


# -- the command as typed, for messages that say how to run it again ------------------------------

def given_args(ctx: click.Context, values: dict | None = None, skip=()) -> list[str]:
    """The options given on this command line (not those left at their defaults), as arguments the
    command takes again; `values` by option name [default: the parsed ones], options in `skip` left out."""
    from click.core import ParameterSource

    values = ctx.params if values is None else values
    args = []
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.name in skip \
                or ctx.get_parameter_source(param.name) != ParameterSource.COMMANDLINE:
            continue
        value = values.get(param.name)
        if param.is_flag and param.secondary_opts:
            args.append(param.opts[0] if value else param.secondary_opts[0])
        elif param.is_flag:
            if value:
                args.append(param.opts[0])
        elif param.multiple or isinstance(value, tuple):
            for v in value or ():
                args += [param.opts[0], str(v)]
        elif value is not None:
            args += [param.opts[0], str(value)]
    return args


def command_line(ctx: click.Context) -> str:
    """The command as typed (or as rebuilt from the arguments and options given when not run from a shell)."""
    import shlex
    import sys

    if sys.argv and sys.argv[0].endswith(("bertmtl", "__main__.py")) and ctx.info_name in sys.argv:
        return "bertmtl " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    parts = ["bertmtl", ctx.info_name]  # the root is "main" when run from Python
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if isinstance(param, click.Argument) and value:
            parts += [str(v) for v in (value if isinstance(value, tuple) else (value,))]
    return shlex.join([*parts, *given_args(ctx)])


# -- options of commands that have no settings of their own to save ------------------------------

def runs_dir_option():
    """--runs-dir: the runs root (train makes runs there; the other commands find them there)."""
    from ..configuration.train_config import FIELDS

    return click.option("--runs-dir", type=click.Path(file_okay=False, path_type=str), default=None,
                        help=FIELDS["runs_dir"].metadata["help"])
