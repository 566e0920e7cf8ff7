"""bertmtl as a Python library: configs that fail early in Python's terms, and types that type
checkers and IDEs see (the Predictor's calls are in test_predict.py and test_export.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bertmtl import TrainConfig
from bertmtl.errors import ConfigError

from .conftest import REPO, command


def test_a_config_checks_each_value_as_it_is_made_and_names_the_field():
    with pytest.raises(ValueError) as e:
        TrainConfig(lr=-1)
    assert isinstance(e.value, ConfigError) and e.value.field == "lr" and str(e.value) == "lr must be > 0"
    assert e.value.format_message() == "--lr must be > 0"  # what the command line says
    with pytest.raises(ValueError, match="^combine must be one of sum, mean, pcgrad"):
        TrainConfig(combine="pcgard")
    with pytest.raises(ValueError, match=r"^max_steps must be >= 1"):
        TrainConfig(max_steps=0)
    assert TrainConfig(lr=2e-4, combine="sum").lr == 2e-4  # values within range are taken as given


def test_a_config_checks_each_values_type_as_a_config_file_is_read():
    from pathlib import Path

    for kw, message in ((dict(lr="abc"), "lr must be a number, not 'abc'"),
                        (dict(batch_size=3.5), "batch_size must be a whole number, not 3.5"),
                        (dict(batch_size="8 steps"), "batch_size must be a whole number, not '8 steps'"),
                        (dict(smart="yes"), "smart must be true or false, not 'yes'"),
                        (dict(epochs=True), "epochs must be a number, not True"),
                        (dict(data_dir=3), "data_dir must be text, not 3")):
        with pytest.raises(ConfigError) as e:
            TrainConfig(**kw)
        assert str(e.value) == message
    # What a config file may write is taken from Python too, in the field's own type.
    cfg = TrainConfig(lr="1e-5", data_dir=Path("data"), tasks="para,sst", report_to=("csv",), batch_size="8",
                      epochs=2, max_steps=10.0)
    assert (cfg.lr, cfg.data_dir, cfg.tasks, cfg.report_to) == (1e-5, "data", ["sst", "para"], ["csv"])
    assert (cfg.batch_size, cfg.max_steps) == (8, 10) and type(cfg.max_steps) is int


def test_an_unknown_keyword_suggests_the_field_meant():
    with pytest.raises(TypeError, match=r"^lrr is not an option of TrainConfig; did you mean lr\?$") as e:
        TrainConfig(lrr=1e-4)
    assert isinstance(e.value, ValueError)  # either way of catching it works
    with pytest.raises(TypeError, match="did you mean max_steps"):
        TrainConfig(max_step=3)
    with pytest.raises(TypeError, match=r"help\(TrainConfig\)"):
        TrainConfig(zzz=1)


def test_config_errors_survive_pickling_as_process_pools_need():
    import pickle

    from bertmtl.errors import UnknownOption

    for make in (lambda: TrainConfig(lr=-1), lambda: TrainConfig(lrr=1)):
        with pytest.raises(ConfigError) as e:
            make()
        back = pickle.loads(pickle.dumps(e.value))
        assert type(back) is type(e.value) and str(back) == str(e.value) and back.format_message() == e.value.format_message()
    assert isinstance(back, UnknownOption) and isinstance(back, TypeError) and back.field == "lrr"


def test_a_config_file_value_the_command_line_overrides_is_checked_as_overridden(tmp_path):
    (tmp_path / "c.yaml").write_text("lr: 0\n")  # out of range alone; the flag below replaces it
    r = command("train", "--config", tmp_path / "c.yaml", "--lr", "2e-4", "--print-config", "json", code=0, text=True)
    assert '"lr": 0.0002' in r.stdout
    r = command("train", "--config", tmp_path / "c.yaml", "--print-config", "json", code=2, text=True)
    assert "--lr must be > 0" in r.stderr


def test_the_fields_are_documented_where_help_and_ides_look():
    doc = TrainConfig.__doc__
    assert "    lr (float): Peak learning rate. [> 0; default 0.0001]" in doc
    assert "combine (str): " in doc and "one of sum, mean, pcgrad" in doc
    assert all(f"    {name} (" in doc for name in TrainConfig.fields())


def test_the_command_line_still_names_the_flag():
    r = command("train", "--lr", "-1", code=2, text=True)
    assert "Error: Invalid value for '--lr': -1.0 is not in the range x>0." in r.stderr and "Traceback" not in r.stderr
    r = command("train", "--lr", "1e-4", "--cagrad-c", "0.5", code=2, text=True)  # checked by validate(), not Click
    assert "Error: --cagrad-c 0.5 applies to --combine cagrad only" in r.stderr


USER_CODE = '''
import bertmtl
from bertmtl import Predictor, TrainConfig, train

reveal_type(bertmtl.Predictor)
reveal_type(Predictor.from_run("checkpoints/RUN").encode(["a"]))
reveal_type(TrainConfig(lr=2e-4).lr)
reveal_type(train(TrainConfig()).best_checkpoint)
TrainConfig(lr="fast")
'''


@pytest.mark.slow
def test_a_type_checker_sees_the_public_api(tmp_path):
    """py.typed and the TYPE_CHECKING imports: mypy sees the classes, not Any, and so catches a wrong
    argument in user code."""
    pytest.importorskip("mypy", reason="the test extra: pip install -e '.[test]'")
    (tmp_path / "user.py").write_text(USER_CODE)
    env = {**os.environ, "MYPYPATH": str(REPO)}  # an editable install's import hook is invisible to mypy
    r = subprocess.run([sys.executable, "-m", "mypy", "--follow-imports=silent", "--cache-dir", str(tmp_path / "cache"),
                        "--no-error-summary", "user.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)
    out = r.stdout.splitlines()
    assert r.returncode == 1, r.stdout + r.stderr  # the one deliberate error below
    assert 'note: Revealed type is "def (checkpoint:' in out[0] and out[0].endswith('-> bertmtl.inference.predict.Predictor"')
    assert out[1].endswith('note: Revealed type is "torch._tensor.Tensor"') and out[2].endswith('Revealed type is "float"')
    assert out[3].endswith('Revealed type is "pathlib.Path | None"')
    assert len(out) == 5 and out[4].startswith("user.py:9: error: Argument \"lr\" to \"TrainConfig\" has incompatible type")


# -- callbacks and the result of train() ------------------------------------------------------

def _tiny(tiny_bert_dir, small_data_dir, out, **kw):
    return TrainConfig(**{"data_dir": str(small_data_dir), "encoder": str(tiny_bert_dir), "out": str(out), "batch_size": 8,
                          "eval_every": 2, "log_every": 1, "max_steps": 6, "precision": "fp32", "device": "cpu", **kw})


class Recorder:
    """A callback that keeps what it hears (it need not subclass Callback: every hook is looked up)."""

    def __init__(self, stop_after_eval_at=None, stop_at_train_step=None):
        self.records, self.evals, self.checkpoints, self.started, self.ended = [], [], [], [], []
        self.stop_after_eval_at, self.stop_at_train_step = stop_after_eval_at, stop_at_train_step

    def on_start(self, record):
        self.started.append(record["type"])

    def on_record(self, record):
        self.records.append(record)
        return record["type"] == "train" and record["step"] == self.stop_at_train_step

    def on_evaluation(self, step, metrics, state):
        self.evals.append((step, metrics["overall"], state.best))
        return step == self.stop_after_eval_at

    def on_checkpoint(self, path, step):
        self.checkpoints.append((path.name, step))

    def on_end(self, result):
        self.ended.append(result)


@pytest.mark.slow
def test_a_callback_hears_every_record_in_order_and_stops_a_run_that_resumes(tiny_bert_dir, small_data_dir, tmp_path):
    import json

    from bertmtl import TrainResult, train
    from bertmtl.runs.progress import SilentReporter
    from bertmtl.runs.status import Status

    rec = Recorder(stop_after_eval_at=4)
    result = train(_tiny(tiny_bert_dir, small_data_dir, tmp_path / "run"), reporter=SilentReporter(), callbacks=[rec])
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [json.loads(json.dumps(r)) for r in rec.records] == logged  # every record, in order, as written
    assert [r["type"] for r in logged] == ["start", "train", "train", "eval", "train", "train", "eval", "end"]
    assert rec.started == ["start"] and [s for s, _, _ in rec.evals] == [2, 4]
    assert ("last", 2) in rec.checkpoints and ("last", 4) in rec.checkpoints and ("best", 2) in rec.checkpoints

    assert isinstance(result, TrainResult) and rec.ended == [result]
    assert "status" in result and dict(result) == result.to_dict() and result.get("nope", 7) == 7  # still the summary
    assert result.status == Status.STOPPED and result.step == 4 and result.total_steps == 6
    assert result.best_checkpoint == tmp_path / "run" / "best" and result["status"] == "stopped"  # summary keys too
    assert result.last_metrics["overall"] == rec.evals[-1][1] and result.best_overall == max(o for _, o, _ in rec.evals)
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == json.loads(json.dumps(result.to_dict()))

    again = Recorder()
    done = train(_tiny(tiny_bert_dir, small_data_dir, tmp_path / "run"), resume=tmp_path / "run",
                 reporter=SilentReporter(), callbacks=[again])  # stopped is resumable: on to the end
    assert done.status == Status.FINISHED and done.step == 6 and again.started == ["resume"]

    rec = Recorder(stop_at_train_step=3)  # on_record's stop ends the run at the end of that step
    r = train(_tiny(tiny_bert_dir, small_data_dir, tmp_path / "run2"), reporter=SilentReporter(), callbacks=[rec])
    assert r.status == Status.STOPPED and r.step == 3 and ("last", 3) in rec.checkpoints


@pytest.mark.slow
def test_patience_is_a_callback_as_any_other(tiny_bert_dir, small_data_dir, tmp_path):
    from bertmtl import train
    from bertmtl.runs.progress import SilentReporter
    from bertmtl.runs.status import Status
    from bertmtl.training.callbacks import Callback

    class Early(Callback):  # a rule of one's own ends a run as --patience does
        def on_evaluation(self, step, metrics, state):
            return Status.EARLY_STOPPED if step >= 2 else None

    r = train(_tiny(tiny_bert_dir, small_data_dir, tmp_path / "run"), reporter=SilentReporter(), callbacks=[Early()])
    assert r.status == Status.EARLY_STOPPED and r.step == 2

    class Wrong(Callback):
        def on_evaluation(self, step, metrics, state):
            return Status.FINISHED

    with pytest.raises(ValueError, match="return True or one of stopped, early-stopped, pruned"):
        train(_tiny(tiny_bert_dir, small_data_dir, tmp_path / "run3"), reporter=SilentReporter(), callbacks=[Wrong()])


@pytest.mark.slow
def test_the_sinks_are_callbacks_that_come_first(tiny_bert_dir, small_data_dir, tmp_path):
    """The metrics log, the console and --report-to csv are callbacks of the same protocol, before the
    caller's: a callback hears a record once metrics.jsonl and train.csv hold it, and close() comes
    last, after on_end, as it does for the sinks."""
    import csv
    import json

    from bertmtl import train
    from bertmtl.runs.progress import SilentReporter
    from bertmtl.sinks import ConsoleSink
    from bertmtl.sinks.csv import CsvSink
    from bertmtl.sinks.metrics_log import MetricsLog
    from bertmtl.training.callbacks import Callback

    assert all(issubclass(c, Callback) for c in (ConsoleSink, CsvSink, MetricsLog))
    run = tmp_path / "run"

    class Follows(Callback):
        def __init__(self):
            self.written, self.rows, self.calls = [], [], []

        def on_record(self, record):
            self.written.append(json.loads((run / "metrics.jsonl").read_text().splitlines()[-1]) ==
                                json.loads(json.dumps(record)))
            if record["type"] == "train":
                with open(run / "train.csv", newline="") as fh:
                    self.rows.append(int(list(csv.DictReader(fh))[-1]["step"]))

        def on_end(self, result):
            self.calls.append("end")

        def close(self):
            self.calls.append("close")

    f = Follows()
    train(_tiny(tiny_bert_dir, small_data_dir, run, report_to=["csv"]), reporter=SilentReporter(), callbacks=[f])
    assert len(f.written) == len((run / "metrics.jsonl").read_text().splitlines()) == 11 and all(f.written)
    assert f.rows == [1, 2, 3, 4, 5, 6] and f.calls == ["end", "close"]


@pytest.mark.slow
def test_a_callback_that_raises_under_torchrun_stops_every_rank(tiny_bert_dir, small_data_dir, tmp_path):
    """The main process decides after an evaluation and tells the others; when a callback raises
    there, the others hear of it and stop, instead of waiting for a decision that never comes."""
    script = tmp_path / "boom.py"
    script.write_text(
        "from bertmtl import TrainConfig, train\n"
        "from bertmtl.training.callbacks import Callback\n\n"
        "class Boom(Callback):\n"
        "    def on_evaluation(self, step, metrics, state):\n"
        "        raise RuntimeError(f'boom at step {step}')\n\n"
        f"train(TrainConfig(data_dir={str(small_data_dir)!r}, encoder={str(tiny_bert_dir)!r}, out={str(tmp_path / 'run')!r},"
        " batch_size=8, eval_every=2, max_steps=6, precision='fp32', device='cpu', tasks=['sst']),"
        " callbacks=[Boom()])\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(script)], capture_output=True, text=True, env=env, timeout=240, cwd=tmp_path)
    assert r.returncode != 0
    assert "RuntimeError: boom at step 2" in r.stderr
    assert "a training callback failed on the main process at step 2; rank 1 stops with it" in r.stderr


@pytest.mark.slow
def test_train_from_python_reports_through_logging(tiny_bert_dir, small_data_dir, tmp_path, capfd):
    import logging

    from bertmtl import train
    from bertmtl.runs.progress import LOGGER

    log, root = logging.getLogger(LOGGER), logging.getLogger()
    saved = (list(root.handlers), list(log.handlers), log.level, log.propagate, root.level)
    heard: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            heard.append(record.getMessage())

    def fresh():  # as in a new process: no handlers anywhere (pytest puts its own on the root)
        root.handlers, log.handlers, log.propagate = [], [], True
        log.setLevel(logging.NOTSET)
        log.__dict__.pop("_bertmtl_ready", None)

    try:
        fresh()  # an application that configured no logging: bertmtl prints, as the command line does
        train(_tiny(tiny_bert_dir, small_data_dir, tmp_path / "a", max_steps=2))
        err = capfd.readouterr().err
        assert "] training for 2 steps" in err and "eval @ step 2" in err

        log.setLevel(logging.WARNING)  # quietened as any library's logger is: only warnings (a skipped row) pass
        train(_tiny(tiny_bert_dir, small_data_dir, tmp_path / "b", max_steps=2))
        err = capfd.readouterr().err
        assert "training for" not in err and "warning: " in err and "skipped row" in err

        fresh()  # an application that configured logging gets the lines, and bertmtl prints nothing itself
        root.addHandler(Keep())
        root.setLevel(logging.INFO)
        train(_tiny(tiny_bert_dir, small_data_dir, tmp_path / "c", max_steps=2))
        assert any(m.startswith("training for 2 steps") for m in heard) and capfd.readouterr().err == ""
    finally:
        root.handlers, log.handlers, log.level, log.propagate = saved[0], saved[1], saved[2], saved[3]
        root.setLevel(saved[4])
        log.__dict__.pop("_bertmtl_ready", None)
