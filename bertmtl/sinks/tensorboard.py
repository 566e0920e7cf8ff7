"""`--report-to tensorboard`: scalars in RUN/tensorboard (extra: `pip install -e ".[tensorboard]"`)."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError, extra_hint
from ..runs.state import TELEMETRY_KEYS
from ..training.callbacks import Callback
from .records import NOT_SCALARS, flatten, is_number


def require_tensorboard():
    """torch's SummaryWriter, or a UserError saying how to install what it needs."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError(f"--report-to tensorboard needs the tensorboard package: "
                        f"{extra_hint('tensorboard', 'tensorboard')}") from None
    return SummaryWriter


class TensorBoardSink(Callback):
    """Scalars in RUN/tensorboard: loss/TASK, smart/TASK, train/lr, train/examples_per_s, dev/METRIC;
    with telemetry cos/PAIR, conflict/PAIR, grad_norm/TASK, weight/TASK, conflict/pairs,
    update/cos_to_sum, update/norm_ratio."""

    def __init__(self, run_dir: Path, resume_step: int | None = None):
        SummaryWriter = require_tensorboard()
        # On resume, events logged after the checkpoint (by the crashed or stopped process) are
        # dropped, as the run repeats those steps.
        self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=resume_step)

    def on_record(self, record: dict) -> None:
        kind = record.get("type")
        if kind == "train":
            tags = {**{f"loss/{t}": v for t, v in record.get("loss", {}).items()},
                    **{f"smart/{t}": v for t, v in record.get("smart", {}).items()},
                    "train/lr": record.get("lr"), "train/examples_per_s": record.get("examples_per_s"),
                    # task-conflict telemetry (mtl/telemetry.py): per pair, per task, and the update's
                    **{f"{kind}/{key}": v for kind in TELEMETRY_KEYS if isinstance(record.get(kind), dict)
                       for key, v in record[kind].items()},
                    "conflict/pairs": record.get("conflicting"), "update/cos_to_sum": record.get("update_cos"),
                    "update/norm_ratio": record.get("update_norm_ratio")}
        elif kind == "eval":
            tags = {f"dev/{k}": v for k, v in flatten(record).items() if k not in NOT_SCALARS}
        else:
            return
        for tag, value in tags.items():
            if is_number(value):
                self.writer.add_scalar(tag, value, record["step"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
