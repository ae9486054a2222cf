"""What every official-code peer shares: the decoding interface the runner's adapter drives, and how a peer is built
(in float32, then cast, as fairseq's --bf16 does). Each library's peers live in their own module beside this."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from retnet.config import VOCAB_SIZE, RetNetConfig

PREFILL_NOTE = "incremental state pre-filled with random {what} to length T (no prompt forward); decode step timed"


def glu_ffn_dim(cfg: RetNetConfig) -> int:
    """GLU width f with 3*d*f ~= our RetNet FFN's parameters (2*d*ffn_dim for GELU; a GLU preset is kept as is).

    Rounded to a multiple of 64 at paper sizes (tensor-core friendly) and of 8 for the small CPU presets; the
    rounding moves the total parameter count by < 0.5%.
    """
    if cfg.ffn == "glu":
        return cfg.ffn_dim
    target = 2 * cfg.ffn_dim / 3
    multiple = 64 if cfg.d_model >= 1024 else 8
    return max(multiple, multiple * round(target / multiple))



class Peer:
    """One decoding model behind the runner's interface. Subclasses own their cache/state format.

    Token ids fed to `step` are the greedy argmax of the previous step's logits (like our own contestants).
    """

    notes: str = ""

    def __init__(self, model: nn.Module, dtype: torch.dtype, device: torch.device) -> None:
        self.model = model.eval().requires_grad_(False)
        self.dtype, self.device = dtype, device
        self.n_params = sum(p.numel() for p in model.parameters())
        self.vocab_size = VOCAB_SIZE
        self.batch_size, self.seq_len, self.pos = 0, 0, 0  # pos: tokens the state holds now

    def prefill_state(self, batch_size: int, seq_len: int) -> None:
        raise NotImplementedError

    def step(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """One decode token for the whole batch; returns logits (B, 1, V). `ids` (B,) overrides the greedy token
        (tests use it to replay a known sequence)."""
        raise NotImplementedError

    def state_bytes(self) -> int:
        """Bytes of the state held now."""
        return sum(t.numel() * t.element_size() for t in self._state_tensors())

    def state_bytes_at(self, batch_size: int, seq_len: int) -> int:
        """Bytes of the state at `batch_size` x `seq_len` from the model's sizes, without building it (what
        `state_bytes()` reports after `prefill_state(batch_size, seq_len)`; capacity searches plan with it)."""
        raise NotImplementedError

    def _state_tensors(self) -> list[torch.Tensor]:
        raise NotImplementedError

    def rewind(self) -> None:
        """Put a length-carrying cache back to length T (a recurrent state has no length and is left as is)."""
        self.pos = self.seq_len

    def reset(self) -> None:
        """Drop the state."""
        self.batch_size, self.seq_len, self.pos = 0, 0, 0

    @torch.inference_mode()
    def warmup(self, batch_size: int = 1, seq_len: int = 16, n_steps: int = 3) -> None:
        """Run a few steps on a throw-away state (first use may compile/autotune kernels), then drop it."""
        self.prefill_state(batch_size, seq_len)
        for _ in range(n_steps):
            self.step()
        self.reset()

    def _random(self, *shape: int, dtype: torch.dtype | None = None, std: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, device=self.device, dtype=dtype or self.dtype) * std



def _cast(model: nn.Module, dtype: torch.dtype, device: torch.device) -> nn.Module:
    """Build in float32, then cast (as fairseq's --fp16/--bf16 does), and give the float32 copy back."""
    model = model.to(dtype)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return model



def build(availability: Callable[[], tuple[bool, str]], builder: Callable[[str], nn.Module], peer_cls: type,
          preset: str, dtype: torch.dtype, device: torch.device | str) -> Peer:
    """A peer at our preset's sizes with random weights, on `device` in `dtype`; RuntimeError when its library is
    not usable here (the reason names the install command)."""
    ok, why = availability()
    if not ok:
        raise RuntimeError(why)
    device = torch.device(device)
    with torch.device(device):
        model = builder(preset)
    return peer_cls(_cast(model, dtype, device), dtype, device)
