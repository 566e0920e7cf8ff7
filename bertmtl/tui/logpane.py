"""The Log pane: what the run said (RUN/messages.log): warnings such as skipped data rows, notices,
each dev evaluation; and, for a training the TUI started, why it failed (its console output)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import RichLog

# Lines kept on screen; older ones scroll away (the file has them all).
MAX_LINES = 2000


def styled(line: str) -> Text:
    """A log line, coloured by what it is: warnings yellow, errors red, evaluations dim."""
    lowered = line.lower()
    style = "yellow" if "warning:" in lowered else "red" if "error" in lowered or "traceback" in lowered else \
        "dim" if "eval @ step" in line else ""
    return Text(line, style=style)


class LogPane(Vertical):
    """The run's messages as they come, newest at the bottom."""

    def compose(self) -> ComposeResult:
        yield RichLog(id="log-view", max_lines=MAX_LINES, wrap=True, auto_scroll=True)

    def on_mount(self) -> None:
        view = self.query_one(RichLog)
        view.border_title = "log (RUN/messages.log)"
        view.write(Text("nothing logged yet", style="dim"))
        self.lines = 0
        self.warnings = 0

    def add(self, lines: list[str], reset: bool = False) -> None:
        view = self.query_one(RichLog)
        if reset or self.lines == 0:
            view.clear()
            if reset:
                self.lines = self.warnings = 0
        for line in lines:
            view.write(styled(line))
            self.lines += 1
            self.warnings += "warning:" in line.lower()

    def clear(self) -> None:
        self.query_one(RichLog).clear()
        self.lines = self.warnings = 0
