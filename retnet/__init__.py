"""RetNet (Sun et al. 2023, arXiv 2307.08621): model, presets, analytic costs, torchscale interop."""

from retnet import analytic
from retnet.config import PRESETS, VOCAB_SIZE, RetNetConfig
from retnet.interop import from_torchscale
from retnet.kernels import triton_available
from retnet.model import RetNet, RetNetState

__all__ = ["PRESETS", "VOCAB_SIZE", "RetNet", "RetNetConfig", "RetNetState", "analytic", "from_torchscale", "triton_available"]
