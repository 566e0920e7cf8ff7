"""Multi-task optimisation: gradient combiners (combiners/), task-conflict telemetry and the SMART regulariser."""

from .combiners import REGISTRY as COMBINERS
from .combiners import pcgrad
from .smart import SmartConfig, smart_loss

__all__ = ["COMBINERS", "pcgrad", "SmartConfig", "smart_loss"]
