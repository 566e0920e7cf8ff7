"""MkDocs hooks (mkdocs.yml `hooks:`): the generated CLI reference shows no default where an option
has none. Click 8.3 and later mark such an option's default with a sentinel (click._utils.UNSET),
which mkdocs-click 0.9 prints as `Sentinel.UNSET`; shown as Click's own --help shows it: nothing."""

from __future__ import annotations

import copy


def on_config(config):
    import click._utils
    from mkdocs_click import _docs

    unset = getattr(click._utils, "UNSET", None)
    row = getattr(_docs, "_format_table_option_row", None)  # mkdocs-click 0.9's; elsewhere left alone
    if unset is None or row is None or getattr(row, "bertmtl", False):
        return config

    def without_sentinel(option):
        if option.default is unset:
            option = copy.copy(option)
            option.default = None
        return row(option)

    without_sentinel.bertmtl = True
    _docs._format_table_option_row = without_sentinel
    return config
