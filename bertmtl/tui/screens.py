"""Modal screens: the key help, and what to do with a running training when quitting."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Static

KEYS = (
    ("m / p / c / l", "Monitor / Playground / Conflicts (task-conflict telemetry) / Log"),
    ("Tab, Shift+Tab", "next / previous place, across the panes"),
    ("Esc", "leave an input (then the single keys work again)"),
    ("n", "start a new training run (the train options of the command line, to edit) and watch it"),
    ("s", ("stop the training the TUI started: it saves RUN/last, "
           "resumable with `bertmtl train --resume RUN`")),
    ("t", "light / dark theme (Ctrl+P: more themes)"),
    ("?", "this help"),
    ("q", "quit (asks first while our training runs)"),
)

PANES = """\
[b]Monitor[/b] follows the run while it trains: progress every step with its ETA (RUN/progress.json), the \
training loss of each task, the dev scores, the learning rate and the SMART terms against step \
(RUN/metrics.jsonl), dev metrics after each evaluation ([b]★[/b] best overall so far, its weights in \
RUN/best/), and the run's schedule and configuration.

[b]Playground[/b] answers as you type: the sentiment of a sentence with a bar per class; with a second \
sentence also the paraphrase probability and the similarity (0-5). It uses the run's best checkpoint \
(or --checkpoint) and reloads it when training writes a new best.

[b]Log[/b] shows what the run said (RUN/messages.log): warnings such as skipped data rows, notices, each \
dev evaluation; and for a training started here that failed, its error.

[b]Conflicts[/b] shows how much the tasks' gradients fight: the last log record's gradient cosine of every task pair ([red]red[/red] where they conflict), each task's gradient norm and the combiner's weight, how far the combiner moved the update from the plain sum, and each pair's cosine over the run."""


def help_table() -> Table:
    """The keys, as a two-column grid."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    for key, what in KEYS:
        grid.add_row(key, what)
    return grid


class HelpScreen(ModalScreen[None]):
    """Keys and what the panes show."""

    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Static(help_table(), id="help-keys")
            yield Static(PANES, id="help-panes")

    def on_mount(self) -> None:
        self.query_one("#help-box").border_title = "bertmtl tui: help"
        self.query_one("#help-box").border_subtitle = "Esc closes"


class QuitScreen(ModalScreen[str]):
    """Training still runs: stop it (checkpoint saved), leave it running, or stay."""

    BINDINGS = [
        Binding("s,enter", "choose('stop')", "stop training and quit"),
        Binding("k", "choose('keep')", "keep it training, quit"),
        Binding("escape,c", "choose('cancel')", "cancel"),
    ]

    def __init__(self, run_name: str, log_path: str):
        super().__init__()
        self.run_name = run_name
        self.log_path = log_path

    def compose(self) -> ComposeResult:
        with Vertical(id="quit-box"):
            yield Static(
                f"[b]Training of {escape(self.run_name)} is still running.[/b]\n\n"
                "[b]s[/b] / [b]Enter[/b]  stop it: a checkpoint is saved and the run can be resumed, then quit\n"
                f"[b]k[/b]          keep it training in the background (log: {escape(self.log_path)}) and quit\n"
                "[b]Esc[/b]        cancel")

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice)


class NewRunScreen(ModalScreen[list]):
    """The options of a new training run, to edit: Enter starts it (if they parse), Esc cancels."""

    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(self, args: list[str], runs_root: str):
        super().__init__()
        self.args = list(args)
        self.runs_root = runs_root

    def compose(self) -> ComposeResult:
        import shlex

        with Vertical(id="new-run-box"):
            yield Static("[b]Start a new training run[/b] and watch it here: the options of "
                         f"[b]bertmtl train[/b] (a new directory under {escape(self.runs_root)}/).")
            yield Input(shlex.join(self.args), placeholder="--data-dir data --max-steps 200", id="new-run-args")
            yield Static("", id="new-run-error")
            yield Static("[b]Enter[/b] start   [b]Esc[/b] cancel", classes="dim")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        import shlex

        try:
            args = shlex.split(event.value)
        except ValueError as e:  # an unclosed quote
            self.query_one("#new-run-error", Static).update(escape(str(e)))
            return
        from ..errors import UserError
        from .training import plan_training

        try:
            plan_training(args)
        except UserError as e:  # refused here, not by a child that fails a moment after it starts
            self.query_one("#new-run-error", Static).update(escape(e.message))
            return
        self.dismiss(args)

    def action_cancel(self) -> None:
        self.dismiss(None)
