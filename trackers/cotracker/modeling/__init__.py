"""CoTracker3's components (Karaev et al., 2024), one module each; see :mod:`.cotracker3`."""
from .cotracker3 import CoTrackerThree
from .encoder import BasicEncoder
from .update_transformer import EfficientUpdateFormer

__all__ = ["BasicEncoder", "CoTrackerThree", "EfficientUpdateFormer"]
