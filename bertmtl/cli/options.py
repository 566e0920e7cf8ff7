"""Options of the commands: the `train` options generated from TrainConfig's fields, and one
decorator per option that several commands take (one help text each). Imports no torch."""

from __future__ import annotations

import dataclasses
import math

import click

from ..train_config import DEVICES, FIELDS, FILE_OPTIONS, PRECISIONS, TrainConfig, flag_name, number_problem


class FiniteFloat(click.FloatRange):
    """A float option that must be finite and within an optional range (a usage error naming the
    option otherwise). click.FloatRange alone lets NaN through (every comparison with NaN is
    False) and inf through a range without an upper bound. Every float option of every command
    uses this type; the same rule checks config files and Python callers (train_config.number_problem)."""

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


# -- options several commands take -----------------------------------------------------------

def _help(name: str, note: str | None = None) -> str:
    text = FIELDS[name].metadata["help"]
    return f"{text[:-1]}; {note}." if note else text


def data_dir_option(note: str | None = None):
    """--data-dir: where the task CSVs are (`note` says which files the command reads)."""
    return click.option("--data-dir", type=click.Path(file_okay=False, path_type=str),
                        default=FIELDS["data_dir"].default, show_default=True, help=_help("data_dir", note))


def out_option(default: str, help: str):
    """--out: the directory a command writes (what goes there differs per command)."""
    return click.option("--out", type=click.Path(file_okay=False, path_type=str), default=default, show_default=True,
                        help=help)


def checkpoint_option():
    """--checkpoint: what evaluate and predict load."""
    return click.option("--checkpoint", "checkpoint_path", type=click.Path(path_type=str), default=None,
                        help="Checkpoint or run directory (its best/) [default: best/ of the most recent run under "
                             "--runs-dir that has one].")


def runs_dir_option():
    """--runs-dir: the runs root (train makes runs there; the other commands find them there)."""
    return click.option("--runs-dir", type=click.Path(file_okay=False, path_type=str), default=None,
                        help=_help("runs_dir"))


def device_option(default: str = "auto", note: str | None = None):
    """--device auto|cpu|cuda; each command picks its default."""
    return click.option("--device", type=click.Choice(DEVICES), default=default, show_default=True,
                        help=_help("device", note))


def encoder_option(note: str | None = None):
    """--encoder (alias --pretrained): a built-in encoder name or an HF directory."""
    return click.option("--encoder", "--pretrained", "encoder", default=FIELDS["encoder"].default, show_default=True,
                        help=_help("encoder", note))


def seed_option(note: str | None = None):
    """--seed, with `note` saying what else it fixes in a command."""
    return click.option("--seed", type=_click_type(FIELDS["seed"]), default=FIELDS["seed"].default, show_default=True,
                        help=_help("seed", note))


def precision_option(choices=PRECISIONS, help: str | None = None):
    """--precision of training steps (train, ablate), or with prediction's choices and text."""
    return click.option("--precision", type=click.Choice(choices), default="auto", show_default=True,
                        help=help or _help("precision"))


# -- `bertmtl train` options, one per TrainConfig field ----------------------------------------

def _click_type(f: dataclasses.Field):
    m = f.metadata
    if m["choices"]:
        return click.Choice(m["choices"])
    if m["path"]:
        return click.Path(file_okay=False, exists=m["path"] == "existing_dir", path_type=str)
    if m["parse"]:
        return str
    if m["type"] is int and (m["min"] is not None or m["max"] is not None):
        return click.IntRange(m["min"], m["max"], min_open=m["min_open"], max_open=m["max_open"])
    if m["type"] is float:  # finite, even without a range
        return FiniteFloat(m["min"], m["max"], min_open=m["min_open"], max_open=m["max_open"])
    return m["type"]


def field_option(f: dataclasses.Field):
    """The Click option of one TrainConfig field."""
    m, name = f.metadata, flag_name(f)
    if m["flag"] == "on/off":
        return click.option(f"--{name}/--no-{name}", f.name, default=f.default, show_default=True, help=m["help"])
    if m["flag"] == "on":
        return click.option(f"--{name}", f.name, is_flag=True, help=m["help"])
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if m["multiple"]:
        return click.option(f"--{name}", f.name, type=str, multiple=True, metavar=m["metavar"], help=m["help"])
    if isinstance(default, list):
        default = ",".join(default)  # shown and parsed as text
    elif isinstance(default, dict):
        default = None  # given keys update the default's
    names = [f"--{name}", *(f"--{a}" for a in m["aliases"])]
    return click.option(*names, f.name, type=_click_type(f), default=default, metavar=m["metavar"],
                        show_default=default is not None, help=m["help"])


def train_options(f):
    """The options of `bertmtl train` (also accepted by `bertmtl tui --train`): one per TrainConfig field."""
    opts = [field_option(fl) for fl in FIELDS.values() if fl.metadata["cli"]]
    opts += [click.option(f"--{key.replace('_', '-')}", key, type=click.Path(dir_okay=False), default=None, help=text)
             for key, text in FILE_OPTIONS]
    for opt in reversed(opts):
        f = opt(f)
    return f


def config_from_options(ctx: click.Context, opts: dict, base: dict | None = None) -> TrainConfig:
    """A TrainConfig from `train_options` values; with `base` (resuming), only options given explicitly override.

    Options that may not change on resume are checked by training itself (TrainConfig.check_resume).
    """
    from click.core import ParameterSource

    files = {k: opts[k] for k, _ in FILE_OPTIONS if opts.get(k)}
    cfg = TrainConfig() if base is None else TrainConfig.from_dict(base)
    for name, fl in FIELDS.items():
        if not fl.metadata["cli"] or name not in opts:
            continue
        value = opts[name]
        if base is not None and ctx.get_parameter_source(name) != ParameterSource.COMMANDLINE:
            continue
        if fl.metadata["parse"] is not None:
            if value is None or (fl.metadata["multiple"] and not value):
                continue
            value = parsed(fl.metadata["parse"], value, f"--{flag_name(fl)}")
            if isinstance(value, dict):
                value = {**getattr(cfg, name), **value}
        setattr(cfg, name, value)
    cfg.files = {**cfg.files, **files}
    return cfg
