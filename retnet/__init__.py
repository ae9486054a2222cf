"""RetNet (Sun et al. 2023, arXiv 2307.08621): model, presets, analytic costs, torchscale interop.

    cfg = RetNetConfig.from_name("6.7b")
    with torch.device("meta"):
        model = RetNet(cfg)                                  # no memory, no init
    model = model.to_empty(device="cuda").to(torch.bfloat16)
    model.reset_parameters()                                 # weights (std 0.02) and the decay/rotation constants
    logits, state = model.prefill(prompt)                    # chunkwise form, state (fp32) after the prompt
    logits, state = model.step(next_ids, state)              # in place, no host sync: CUDA-graph capturable
    model.step_kernel                                        # "triton" (fused, CUDA) or "torch" (reference)
"""

from retnet import analytic
from retnet.config import PRESETS, VOCAB_SIZE, RetNetConfig
from retnet.interop import from_torchscale
from retnet.kernels import triton_available
from retnet.model import RetNet, RetNetState

__all__ = ["PRESETS", "VOCAB_SIZE", "RetNet", "RetNetConfig", "RetNetState", "analytic", "from_torchscale", "triton_available"]
