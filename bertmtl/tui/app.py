"""The `bertmtl tui` application: a Monitor pane and a Playground pane over one run directory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Footer, Header, Input, TabbedContent, TabPane
from textual.worker import get_current_worker

from ..rundir import LAST, RunState, checkpoint_identity, is_checkpoint
from .conflicts import ConflictPane
from .feed import MetricsTail, Poll
from .monitor import MonitorPane
from .playground import PlaygroundPane, default_predictor
from .screens import HelpScreen, QuitScreen
from .training import TrainingProcess

# Where Tab goes, in order, across both panes: (pane, widget). Tab switches panes on the way.
FOCUS_RING = (("monitor", "#dev-table"), ("monitor", "#config-box"),
              ("playground", "#sentence-a"), ("playground", "#sentence-b"), ("conflicts", "#conflict-summary"))
# Torch threads of the TUI process (only the playground uses torch here); see run_tui.
PLAYGROUND_THREADS = 1
# How often the child process is checked for having exited (cheap: a waitpid).
CHILD_CHECK_S = 0.25


class MetricsRead(Message):
    """The tail found new records (or found the file replaced)."""

    def __init__(self, poll: Poll):
        super().__init__()
        self.poll = poll


class CheckpointChanged(Message):
    """The run's best/ (or last/) checkpoint appeared or was replaced."""

    def __init__(self, identity):
        super().__init__()
        self.identity = identity


class BertmtlApp(App):
    """Watch a run (Monitor) and try its model (Playground); optionally run its training."""

    CSS_PATH = "bertmtl.tcss"
    TITLE = "bertmtl"
    # Focused when the screen starts. (A focus() from on_mount would run late, and could undo
    # a `p` pressed at once.)
    AUTO_FOCUS = "#dev-table"
    # Screen classes for the stylesheet: a tall terminal shows more rows of the dev table.
    VERTICAL_BREAKPOINTS = [(0, "-short"), (40, "-tall")]
    BINDINGS = [
        Binding("q", "quit", "quit"),
        Binding("question_mark", "help", "help", key_display="?"),
        Binding("m", "show_pane('monitor')", "monitor"),
        Binding("p", "show_pane('playground')", "playground"),
        Binding("c", "show_pane('conflicts')", "conflicts"),
        Binding("s", "stop_training", "stop training"),
        Binding("t", "toggle_dark", "theme"),
        # Priority, so that Tab crosses panes instead of staying inside the visible one.
        Binding("tab", "cycle_focus(1)", "next", show=False, priority=True),
        Binding("shift+tab", "cycle_focus(-1)", "previous", show=False, priority=True),
        Binding("escape", "leave_input", "leave input"),
    ]

    def __init__(self, run_dir: Path, checkpoint: str | None = None, train_argv: list[str] | None = None,
                 poll_interval: float = 0.5, predictor_factory: Callable[[Path], object] = default_predictor):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.checkpoint = checkpoint
        self.poll_interval = poll_interval
        self.predictor_factory = predictor_factory
        self.state = RunState()
        self.tail = MetricsTail(self.run_dir / "metrics.jsonl")
        self.training = TrainingProcess(train_argv, self.run_dir) if train_argv else None
        self._quit_when_stopped = False
        self.keep_training = False  # the user chose to quit and leave the training running
        self._training_rc: int | None = None
        self._evals_seen = None
        self.sub_title = self.run_dir.name

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(initial="monitor"):
            with TabPane("Monitor", id="monitor"):
                yield MonitorPane(id="monitor-pane")
            with TabPane("Playground", id="playground"):
                yield PlaygroundPane(self.run_dir, self.checkpoint, self.predictor_factory, id="playground-pane")
            with TabPane("Conflicts", id="conflicts"):
                yield ConflictPane(id="conflict-pane")
        yield Footer()

    @property
    def monitor(self) -> MonitorPane:
        return self.query_one(MonitorPane)

    @property
    def playground(self) -> PlaygroundPane:
        return self.query_one(PlaygroundPane)

    def on_mount(self) -> None:
        if self.training is not None:
            self.training.start()
            self.set_interval(CHILD_CHECK_S, self._check_training)
        self.refresh_monitor()
        self.follow_metrics()

    # -- following the metrics file ------------------------------------------------------

    @work(thread=True, group="tail", exit_on_error=False)
    def follow_metrics(self) -> None:
        """Poll metrics.jsonl (and the checkpoint) in a thread: a shared disk may be slow to answer."""
        worker = get_current_worker()
        last_checkpoint = object()  # nothing seen yet
        while not worker.is_cancelled:
            poll = self.tail.poll()
            if poll.records or poll.reset:
                self.post_message(MetricsRead(poll))
            identity = checkpoint_identity(self.run_dir)
            if identity != last_checkpoint:
                last_checkpoint = identity
                self.post_message(CheckpointChanged(identity))
            worker.cancelled_event.wait(self.poll_interval)

    @on(MetricsRead)
    def _metrics_read(self, message: MetricsRead) -> None:
        if message.poll.reset:
            self.state.reset()
        self.state.apply(message.poll.records)
        self.refresh_monitor()

    @on(CheckpointChanged)
    def _checkpoint_changed(self, message: CheckpointChanged) -> None:
        self.playground.checkpoint_seen(message.identity)

    def refresh_monitor(self) -> None:
        """Show the run state, with what we know of our own training process on top."""
        evals = [e["step"] for e in self.state.evals], self.state.best_step  # the table redraws only on change
        status, note = self._training_note()
        self.monitor.show(self.state, status=status, note=note, evals_changed=evals != self._evals_seen)
        self.query_one(ConflictPane).show(self.state)
        self._evals_seen = evals

    def _training_note(self) -> tuple[str | None, str]:
        """A status that overrides the records' (stopping, failed) and a line of explanation."""
        resume = f"Resume with: bertmtl train --resume {self.run_dir}"
        t = self.training
        if t is not None and self._training_rc is None:
            if t.stopping:
                return "stopping", "stopping… training saves a checkpoint (RUN/last) and exits"
            if self.state.records == 0:
                return "starting", f"starting training in the background (log: {self.run_dir.name}/train.log)"
            return None, ""
        if t is not None and self._training_rc != 0 and self.state.status not in ("stopped", "paused", "finished"):
            return "failed", f"training exited with code {self._training_rc} (log: {t.log_path}):\n{t.log_tail()}"
        if self.state.status in ("stopped", "paused"):
            return None, f"{self.state.status} at step {self.state.step}; checkpoint saved. {resume}"
        if self.state.status == "nonfinite":
            kept = f"the last good weights are in {self.run_dir.name}/last" \
                if is_checkpoint(self.run_dir / LAST) else "no checkpoint was saved before"
            return None, f"stopped by non-finite losses; {kept}"
        return None, ""

    def _check_training(self) -> None:
        rc = self.training.returncode
        if rc is None or rc == self._training_rc:
            return
        self._training_rc = rc
        self.refresh_monitor()
        self.refresh_bindings()
        if self._quit_when_stopped:
            self.exit(message=self._exit_message(rc))

    def _exit_message(self, rc: int) -> str:
        """What to print after quitting once our training has stopped."""
        if rc == 130 or self.state.status == "stopped":  # 130: stopped by its SIGINT, checkpoint saved
            return (f"training stopped; checkpoint saved in {self.run_dir / 'last'}. "
                    f"Resume with: bertmtl train --resume {self.run_dir}")
        if rc == 0 and self.state.status == "paused":
            return (f"training paused at --stop-at-step; checkpoint saved in {self.run_dir / 'last'}. "
                    f"Go on with: bertmtl train --resume {self.run_dir}")
        if rc == 0:
            return f"training finished; the best checkpoint is {self.run_dir / 'best'}"
        return f"training exited with code {rc}; see {self.training.log_path}"

    # -- actions -------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop_training":
            if self.training is None or not self.training.running:
                return False  # someone else's run, or ours has ended: nothing to stop
            return None if self.training.stopping else True  # greyed out while it saves
        if action == "leave_input":
            return isinstance(self.focused, Input)  # shown in the footer only where it means something
        return True

    def action_stop_training(self) -> None:
        """Ask our training process to save a checkpoint and stop."""
        if self.training is not None and self.training.stop():
            self.notify("stopping… a checkpoint will be saved; the run can be resumed", title="training")
            self.refresh_monitor()
            self.refresh_bindings()

    async def action_quit(self) -> None:
        if self.training is None or not self.training.running:
            self.exit()
        elif self._quit_when_stopped:
            # Asked twice: leave now. The child got its SIGINT and still saves on its own.
            self.exit(message=f"training is still saving its checkpoint; then resume with "
                              f"`bertmtl train --resume {self.run_dir}`")
        else:
            self.push_screen(QuitScreen(self.run_dir.name, str(self.training.log_path)), self._quit_choice)

    def _quit_choice(self, choice: str | None) -> None:
        if choice == "stop":
            self._quit_when_stopped = True
            if self.training.stop():
                self.refresh_monitor()
                self.refresh_bindings()
            self.notify("stopping… this closes once the checkpoint is saved (q: close now)", title="training")
        elif choice == "keep":
            self.keep_training = True
            self.exit(message=f"training continues in the background (pid {self.training.proc.pid}, log "
                              f"{self.training.log_path}); watch it with `bertmtl tui {self.run_dir}`")

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_show_pane(self, pane: str) -> None:
        """Show a pane and put the focus in it."""
        self._focus(next(i for i, (p, _) in enumerate(FOCUS_RING) if p == pane))

    def action_cycle_focus(self, direction: int) -> None:
        """Tab: the next place in FOCUS_RING, switching panes when the place is in the other one."""
        if self.screen is not self.screen_stack[0]:  # a modal screen has its own focus chain
            self.screen.focus_next() if direction > 0 else self.screen.focus_previous()
            return
        here = next((i for i, (_, sel) in enumerate(FOCUS_RING)
                     if self.focused is not None and self.focused.id == sel[1:]), None)
        if here is None:  # focus nowhere (or on the tabs): start in the pane on view
            active = self.query_one(TabbedContent).active
            here = next(i for i, (p, _) in enumerate(FOCUS_RING) if p == active) - direction
        self._focus((here + direction) % len(FOCUS_RING))

    def _focus(self, index: int) -> None:
        pane, selector = FOCUS_RING[index]
        # Focus first, then switch: a pane hidden while it holds the focus would hand the focus
        # to one of its own (hidden) widgets, and TabbedContent would switch back to it.
        self.screen.set_focus(self.query_one(selector))
        self.query_one(TabbedContent).active = pane

    @on(TabbedContent.TabActivated)
    def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        """A tab clicked (or switched to): focus its pane's first place, unless focus is already in it."""
        pane = event.pane.id
        places = [sel for p, sel in FOCUS_RING if p == pane]

        def focus_if_outside() -> None:
            # Tab, m, p and c have put the focus in the pane already; a click on the tab has not.
            # The event may also be stale (the first pane's, at start-up): then leave it.
            if self.query_one(TabbedContent).active != pane:
                return
            if self.focused is None or f"#{self.focused.id}" not in places:
                self.query_one(places[0]).focus()

        if places:
            self.call_after_refresh(focus_if_outside)

    def action_leave_input(self) -> None:
        """Esc: leave the input, so that single-key bindings (q, s, ?) work again."""
        self.screen.set_focus(None)


def run_tui(run_dir: Path, checkpoint: str | None = None, train_argv: list[str] | None = None) -> None:
    """Run the TUI on `run_dir` (starting `train_argv` in the background first, when given)."""
    import torch

    # The playground answers one short input at a time: extra threads gain little, and while a
    # training (ours or another) keeps the cores busy, their spin-waits slow each answer down
    # by orders of magnitude (README, Benchmarks).
    torch.set_num_threads(PLAYGROUND_THREADS)
    app = BertmtlApp(run_dir, checkpoint=checkpoint, train_argv=train_argv)
    try:
        app.run()
    finally:
        # However the app ended (a crash included), our training is not left running unasked;
        # SIGINT still lets it save a resumable checkpoint.
        if app.training is not None and not app.keep_training:
            app.training.stop()
