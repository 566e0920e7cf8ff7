"""Multi-task optimisation: PCGrad gradient surgery and the SMART regulariser."""

from .pcgrad import pcgrad
from .smart import SmartConfig, smart_loss

__all__ = ["pcgrad", "SmartConfig", "smart_loss"]
