"""The `bertmtl tui` application: Monitor, Playground, Conflicts and Log panes over one run directory,
and the training it starts (`--train`, or `n` for a new run) as a `bertmtl train` child process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Footer, Header, Input, TabbedContent, TabPane
from textual.worker import get_current_worker

from ..runs.rundir import BEST, LAST, MESSAGES, METRICS_LOG, PROGRESS, WRITER_LOCK, checkpoint_identity, is_checkpoint, writer_alive
from ..runs.state import RunState
from ..runs.status import Status
from ..training.stopping import STOPPED_EXIT
from .conflicts import ConflictPane
from .feed import LineTail, MetricsTail, Poll, read_progress
from .logpane import LogPane
from .monitor import MonitorPane
from .playground import PlaygroundPane, default_predictor
from .screens import HelpScreen, NewRunScreen, QuitScreen
from .training import TrainingProcess

# Where Tab goes, in order, across the panes: (pane, widget). Tab switches panes on the way.
FOCUS_RING = (("monitor", "#dev-table"), ("monitor", "#config-box"),
              ("playground", "#sentence-a"), ("playground", "#sentence-b"), ("conflicts", "#conflict-summary"),
              ("log", "#log-view"))
# Torch threads of the TUI process (only the playground uses torch here); see run_tui.
PLAYGROUND_THREADS = 1
# How often the child process is checked for having exited (cheap: a waitpid).
CHILD_CHECK_S = 0.25


class RunMessage(Message):
    """Something the follower thread found in a run directory (ignored once the app follows another)."""

    def __init__(self, run_dir: Path):
        super().__init__()
        self.run_dir = run_dir


class MetricsRead(RunMessage):
    """The tail found new records (or found the file replaced)."""

    def __init__(self, run_dir: Path, poll: Poll):
        super().__init__(run_dir)
        self.poll = poll


class LogRead(RunMessage):
    """New lines of the run's messages.log."""

    def __init__(self, run_dir: Path, lines: list[str], reset: bool):
        super().__init__(run_dir)
        self.lines, self.reset = lines, reset


class ProgressRead(RunMessage):
    """The run's progress.json changed: the step bar moved."""

    def __init__(self, run_dir: Path, bar: dict | None):
        super().__init__(run_dir)
        self.bar = bar


class WriterSeen(RunMessage):
    """Whether a process writes the run now (its writer lock; rundir.writer_alive), when that changed."""

    def __init__(self, run_dir: Path, alive: bool):
        super().__init__(run_dir)
        self.alive = alive


class CheckpointChanged(RunMessage):
    """The run's best/ (or last/) checkpoint appeared or was replaced."""

    def __init__(self, run_dir: Path, identity):
        super().__init__(run_dir)
        self.identity = identity


class BertmtlApp(App):
    """Watch a run (Monitor) and try its model (Playground); optionally run its training."""

    CSS_PATH = "bertmtl.tcss"
    TITLE = "bertmtl"
    # Focused when the screen starts. (A focus() from on_mount would run late, and could undo
    # a `p` pressed at once.)
    AUTO_FOCUS = "#dev-table"
    # Screen classes for the stylesheet: a tall terminal shows more rows of the dev table; a wide one
    # the learning-rate and SMART curves beside the loss and the dev score.
    VERTICAL_BREAKPOINTS = [(0, "-short"), (40, "-tall")]
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    BINDINGS = [
        Binding("q", "quit", "quit"),
        Binding("question_mark", "help", "help", key_display="?"),
        Binding("m", "show_pane('monitor')", "monitor"),
        Binding("p", "show_pane('playground')", "playground"),
        Binding("c", "show_pane('conflicts')", "conflicts"),
        Binding("l", "show_pane('log')", "log"),
        Binding("n", "new_run", "new run"),
        Binding("s", "stop_training", "stop training"),
        Binding("t", "toggle_dark", "theme"),
        # Priority, so that Tab crosses panes instead of staying inside the visible one.
        Binding("tab", "cycle_focus(1)", "next", show=False, priority=True),
        Binding("shift+tab", "cycle_focus(-1)", "previous", show=False, priority=True),
        Binding("escape", "leave_input", "leave input"),
    ]

    def __init__(self, run_dir: Path, checkpoint: str | None = None, train_argv: list[str] | None = None,
                 poll_interval: float = 0.5, predictor_factory: Callable[[Path], object] = default_predictor,
                 train_args: list[str] | None = None, start_training: bool = False, runs_root: Path | None = None):
        """Follow `run_dir`. `start_training`: start `bertmtl train TRAIN_ARGS --out RUN_DIR` first
        (`train_argv`: another command instead, in tests). `train_args` also fill the form of a new
        run (`n`), made under `runs_root` (default: the run's parent directory)."""
        super().__init__()
        self.checkpoint = checkpoint
        self.poll_interval = poll_interval
        self.predictor_factory = predictor_factory
        self.train_args = list(train_args or [])
        self.runs_root = Path(runs_root) if runs_root is not None else Path(run_dir).parent
        self._follow(Path(run_dir))
        self.training = None
        if train_argv:
            self.training = TrainingProcess(train_argv, self.run_dir)
        elif start_training:
            self.training = TrainingProcess.train(self.train_args, self.run_dir)
        self._quit_when_stopped = False
        self.keep_training = False  # the user chose to quit and leave the training running
        self.discarded: str | None = None  # why a training of ours ended before it made a run (its directory gone)

    def _follow(self, run_dir: Path) -> None:
        """Forget the run followed until now and follow `run_dir` (its files read from their start)."""
        self.run_dir = run_dir
        self.state = RunState()
        self.tail = MetricsTail(run_dir / METRICS_LOG)
        self.log_tail = LineTail(run_dir / MESSAGES)
        self._training_rc: int | None = None
        self._evals_seen = None
        self.writer_alive: bool | None = None  # unknown until the follower's first look
        self.sub_title = run_dir.name

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(initial="monitor"):
            with TabPane("Monitor", id="monitor"):
                yield MonitorPane(id="monitor-pane")
            with TabPane("Playground", id="playground"):
                yield PlaygroundPane(self.run_dir, self.checkpoint, self.predictor_factory, id="playground-pane")
            with TabPane("Conflicts", id="conflicts"):
                yield ConflictPane(id="conflict-pane")
            with TabPane("Log", id="log"):
                yield LogPane(id="log-pane")
        yield Footer()

    @property
    def monitor(self) -> MonitorPane:
        return self.query_one(MonitorPane)

    @property
    def playground(self) -> PlaygroundPane:
        return self.query_one(PlaygroundPane)

    def on_unmount(self) -> None:
        """A training of ours that ended before it made a run leaves a directory nothing lists or
        deletes: it goes, and what it said is kept for the exit message."""
        t = self.training
        if t is not None and not t.running and t.returncode not in (None, 0):
            why = t.log_tail(1)
            if t.discard_if_not_a_run():
                self.discarded = f"the training ended before it made a run (nothing kept in {self.run_dir}): {why}"

    def on_mount(self) -> None:
        import asyncio
        import signal

        if self.training is not None:
            self.training.start()
        self.set_interval(CHILD_CHECK_S, self._check_training)
        # SIGTERM (a `kill`) or SIGHUP (the terminal closed): leave as `q` would, the terminal restored
        # and our training asked to stop and save, not left training with nobody watching.
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, self._signalled, sig)
        self.refresh_monitor()
        self.follow_run()

    # -- following the run's files -------------------------------------------------------

    @work(thread=True, group="tail", exclusive=True, exit_on_error=False)
    def follow_run(self) -> None:
        """Poll the run's metrics.jsonl, messages.log, progress.json and checkpoint in a thread (a
        shared disk may be slow to answer); what it finds comes back as messages."""
        worker = get_current_worker()
        run_dir, tail, log_tail = self.run_dir, self.tail, self.log_tail
        last_checkpoint = last_progress = last_alive = object()  # nothing seen yet
        while not worker.is_cancelled:
            alive = writer_alive(run_dir)
            if alive != last_alive:
                last_alive = alive
                self.post_message(WriterSeen(run_dir, alive))
            poll = tail.poll()
            if poll.records or poll.reset:
                self.post_message(MetricsRead(run_dir, poll))
            lines, reset = log_tail.poll()
            if lines or reset:
                self.post_message(LogRead(run_dir, lines, reset))
            try:
                stamp = (run_dir / PROGRESS).stat().st_mtime_ns
            except OSError:
                stamp = None
            if stamp != last_progress:
                last_progress = stamp
                self.post_message(ProgressRead(run_dir, read_progress(run_dir / PROGRESS)))
            identity = checkpoint_identity(run_dir)
            if identity != last_checkpoint:
                last_checkpoint = identity
                self.post_message(CheckpointChanged(run_dir, identity))
            worker.cancelled_event.wait(self.poll_interval)

    @on(MetricsRead)
    def _metrics_read(self, message: MetricsRead) -> None:
        if message.run_dir != self.run_dir:
            return
        if message.poll.reset:
            self.state.reset()
        self.state.apply(message.poll.records)
        self.refresh_monitor()

    @on(LogRead)
    def _log_read(self, message: LogRead) -> None:
        if message.run_dir == self.run_dir:
            self.query_one(LogPane).add(message.lines, message.reset)
            self.refresh_status()

    @on(ProgressRead)
    def _progress_read(self, message: ProgressRead) -> None:
        if message.run_dir == self.run_dir:
            self.state.apply_progress(message.bar)
            self.refresh_status()

    @on(WriterSeen)
    def _writer_seen(self, message: WriterSeen) -> None:
        if message.run_dir == self.run_dir:
            self.writer_alive = message.alive
            self.refresh_status()

    @on(CheckpointChanged)
    def _checkpoint_changed(self, message: CheckpointChanged) -> None:
        if message.run_dir == self.run_dir:
            self.playground.checkpoint_seen(message.identity)

    def refresh_monitor(self) -> None:
        """Show the run state, with what we know of our own training process on top."""
        evals = [e["step"] for e in self.state.evals], self.state.best_step  # the table redraws only on change
        status, note = self._training_note()
        self.monitor.show(self.state, status=status, note=note, evals_changed=evals != self._evals_seen,
                          warnings=self.query_one(LogPane).warnings)
        self.query_one(ConflictPane).show(self.state)
        self._evals_seen = evals

    def refresh_status(self) -> None:
        """The status line alone: the step bar moved, or a warning came."""
        status, note = self._training_note()
        self.monitor.show_progress(self.state, status=status, note=note, warnings=self.query_one(LogPane).warnings)

    def _resume_command(self) -> str:
        """How to go on with this run: the command its own configuration resumes with (pretrain's or train's)."""
        from ..runs.catalog import resume_command

        return resume_command(self.run_dir, self.state.config)

    def _signalled(self, signum: int) -> None:
        import signal

        name = signal.Signals(signum).name
        if self.training is not None and self.training.running and not self.keep_training:
            self.training.stop()
            self.exit(message=f"{name}: training asked to stop; it saves {self.run_dir / LAST} and ends (resume "
                              f"with: {self._resume_command()})")
        else:
            self.exit(message=f"{name}: closed")

    def _training_note(self) -> tuple[str | None, str]:
        """A status that overrides the records' (stopping, failed) and a line of explanation."""
        t, status = self.training, Status.of(self.state.status)
        if t is not None and self._training_rc is None:
            if t.stopping:
                return "stopping", "stopping… training saves a checkpoint (RUN/last) and exits"
            if self.state.records == 0:
                return "starting", f"starting training in the background (log: {self.run_dir.name}/{t.log_path.name})"
            return None, ""
        ended = status.final or status in (Status.STOPPED, Status.PAUSED, Status.INTERRUPTED)  # its end record says
        if t is not None and self._training_rc == STOPPED_EXIT and not ended:  # stopped while it was set up
            return str(Status.STOPPED), "stopped while the run was being set up: nothing was trained or saved (n: new run)"
        if t is not None and self._training_rc != 0 and not ended:
            return "failed", f"training exited with code {self._training_rc} (log: {t.log_path}):\n{t.log_tail()}"
        if status == Status.RUNNING and self.writer_alive is False:  # no end record, and nobody writes it
            kept = "from its last checkpoint" if is_checkpoint(self.run_dir / LAST) else "(no checkpoint was saved)"
            return str(Status.CRASHED), (f"no process trains this run any more (killed, or it failed); resume {kept} "
                                         f"with: {self._resume_command()}")
        if status in (Status.STOPPED, Status.PAUSED):
            return None, f"{status} at step {self.state.step}; checkpoint saved. Resume with: {self._resume_command()}"
        if status == Status.INTERRUPTED:
            kept = "from its last checkpoint" if is_checkpoint(self.run_dir / LAST) else "(no checkpoint was saved)"
            return None, f"stopped at once at step {self.state.step}; resume {kept} with: {self._resume_command()}"
        if status == Status.NONFINITE:
            kept = f"the last good weights are in {self.run_dir.name}/last" \
                if is_checkpoint(self.run_dir / LAST) else "no checkpoint was saved before"
            return None, f"stopped by non-finite losses; {kept}"
        return None, ""

    def _check_training(self) -> None:
        if self.training is None:
            return
        rc = self.training.returncode
        if rc is None or rc == self._training_rc:
            return
        self._training_rc = rc
        if rc != 0 and not Status.of(self.state.status).final:  # its error, in the log pane too
            self.query_one(LogPane).add([f"training exited with code {rc}; the end of {self.training.log_path}:",
                                         *self.training.log_tail(30).splitlines()])
        self.refresh_monitor()
        self.refresh_bindings()
        if self._quit_when_stopped:
            self.exit(message=self._exit_message(rc))

    def _exit_message(self, rc: int) -> str:
        """What to print after quitting once our training has stopped: what its end record says was
        kept (exit code 130 alone does not: a stop during set-up saved nothing)."""
        status = Status.of(self.state.status)
        if status == Status.STOPPED:
            return (f"training stopped; checkpoint saved in {self.run_dir / LAST}. "
                    f"Resume with: {self._resume_command()}")
        if status == Status.INTERRUPTED:
            kept = f"go on from {self.run_dir / LAST} with: {self._resume_command()}" \
                if is_checkpoint(self.run_dir / LAST) else "no checkpoint had been saved"
            return f"training stopped at once at step {self.state.step}, without saving; {kept}"
        if status == Status.PAUSED:
            return (f"training paused at --stop-at-step; checkpoint saved in {self.run_dir / LAST}. "
                    f"Go on with: {self._resume_command()}")
        if rc == 0 and status.final:
            return f"training {status}; the best checkpoint is {self.run_dir / BEST}"
        if rc == STOPPED_EXIT:
            return "training stopped while it was being set up; nothing was trained or saved"
        return f"training exited with code {rc}; see {self.training.log_path}"

    # -- actions -------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop_training":
            if self.training is not None and self.training.running:
                return None if self.training.stopping else True  # greyed out while it saves
            return True if self._writer_pid() is not None else False  # a run another process trains here
        if action == "new_run":
            return True  # while one of ours runs, `n` says why it waits (one at a time)
        if action == "leave_input":
            return isinstance(self.focused, Input)  # shown in the footer only where it means something
        return True

    def _writer_pid(self) -> int | None:
        """The process that trains the followed run on this machine (its writer lock), when it is not ours."""
        import os
        import socket

        from ..runs.locks import lock_owner

        if self.writer_alive is not True:
            return None
        owner = lock_owner(self.run_dir / WRITER_LOCK)
        if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int) \
                or owner["pid"] == os.getpid():
            return None
        return owner["pid"]

    def action_stop_training(self) -> None:
        """Ask the training to save a checkpoint and stop: ours, or the process that trains this run here."""
        import os
        import signal

        if self.training is not None and self.training.running:
            if self.training.stop():
                self.notify("stopping… a checkpoint will be saved; the run can be resumed", title="training")
        elif (pid := self._writer_pid()) is not None:
            try:
                os.kill(pid, signal.SIGINT)  # as a Ctrl-C in its terminal: it saves last/ and ends
            except OSError as e:
                self.notify(f"could not signal process {pid}: {e.strerror or e}", title="training", severity="error")
                return
            self.notify(f"asked process {pid} to stop; it saves a checkpoint and ends", title="training")
        self.refresh_monitor()
        self.refresh_bindings()

    async def action_quit(self) -> None:
        if self.training is None or not self.training.running:
            self.exit()
        elif self._quit_when_stopped:
            # Asked twice: leave now. The child got its SIGINT and still saves on its own.
            self.exit(message=f"training is still saving its checkpoint; then resume with "
                              f"`{self._resume_command()}`")
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

    def action_new_run(self) -> None:
        """Open the form of a new training run (the command line's train options, to edit)."""
        if self.training is not None and self.training.running:
            self.notify("a training started here still runs: stop it first (s)", title="new run")
            return
        self.push_screen(NewRunScreen(self.train_args, str(self.runs_root)), self._new_run_chosen)

    def _new_run_chosen(self, args: list[str] | None) -> None:
        """Start `bertmtl train ARGS` in a new run directory and follow it."""
        from ..runs.catalog import new_run_dir

        if args is None:
            return
        from ..errors import UserError
        from ..runs.catalog import runs_root
        from .training import plan_training

        try:
            cfg = plan_training(args)
        except UserError as e:  # the files changed since the form checked them
            self.notify(e.message, title="new run", severity="error")
            return
        if self.training is not None:
            self.training.discard_if_not_a_run()  # the last one failed to start: nothing of it to keep
        self.train_args = args
        run = new_run_dir(runs_root(cfg.runs_dir) if cfg.runs_dir else self.runs_root)
        self._follow(run)
        self.query_one(LogPane).clear()
        self.playground.switch_run(run)
        self.training = TrainingProcess.train(args, run)
        self.training.start()
        self._quit_when_stopped = self.keep_training = False
        self.refresh_monitor()
        self.refresh_bindings()
        self.follow_run()  # exclusive: the previous run's follower is cancelled
        self.action_show_pane("monitor")
        self.notify(f"training started in {run}", title="new run")

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


def run_tui(run_dir: Path, checkpoint: str | None = None, train_args: list[str] | None = None,
            start_training: bool = False, runs_root: Path | None = None) -> None:
    """Run the TUI on `run_dir` (starting `bertmtl train TRAIN_ARGS --out RUN_DIR` in the background
    first, with `start_training`)."""
    from ..threads import use_threads

    # The playground answers one short input at a time: extra threads gain little, and while a
    # training (ours or another) keeps the cores busy, their spin-waits slow each answer down
    # by orders of magnitude (docs/benchmarks.md).
    use_threads(PLAYGROUND_THREADS)
    app = BertmtlApp(run_dir, checkpoint=checkpoint, train_args=train_args, start_training=start_training,
                     runs_root=runs_root)
    try:
        app.run()
    finally:
        # However the app ended (a crash included), our training is not left running unasked;
        # SIGINT still lets it save a resumable checkpoint.
        if app.training is not None and not app.keep_training:
            app.training.stop()
        if app.discarded:
            import sys

            print(app.discarded, file=sys.stderr)
