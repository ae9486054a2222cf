"""RetNet contestants: recurrent decode (chunkwise prefill, then one recurrent step per token) and training in
the parallel / chunkwise forms."""
from __future__ import annotations

import torch

import retnet
from retnet import analytic as ra

from .contestants import Analytic, Contestant, random_ids


class RetNetContestant(Contestant):
    arch = "retnet"

    def __init__(self, preset: str, impl: str, device: torch.device, dtype: torch.dtype, chunk_size: int = 512,
                 use_graph: bool = True, seed: int = 0):
        super().__init__(device, dtype, use_graph)
        self.impl, self.chunk_size, self.seed = impl, chunk_size, seed
        self.cfg = retnet.RetNetConfig.from_name(preset)
        torch.manual_seed(seed)
        with torch.device(device):
            self.model = retnet.RetNet(self.cfg).to(dtype)
        self.model.eval()
        self.n_params = sum(p.numel() for p in self.model.parameters())
        self.vocab = self.cfg.vocab_size
        self.max_seq_len = getattr(self.cfg, "max_seq_len", None)
        self.state_dtype = self.cfg.state_dtype
        if impl == "retnet-recurrent":
            self.kernel = str(getattr(self.model, "step_kernel", "torch"))
        else:
            self.kernel = "torch"
        self.state = None
        self.ids: torch.Tensor | None = None

    def analytic(self, batch: int, seq_len: int) -> Analytic:
        return Analytic(
            weights_bytes=ra.weight_bytes(self.cfg, self.dtype),
            cache_bytes=ra.state_bytes(self.cfg, batch, self.state_dtype),
            bytes_per_step=ra.decode_bytes_per_step(self.cfg, batch, self.dtype, self.state_dtype),
            flops_per_token=ra.flops_per_token(self.cfg, seq_len),
        )

    @torch.inference_mode()
    def prefill(self, batch: int, seq_len: int) -> None:
        prompt = random_ids(self.vocab, batch, seq_len, self.device, self.seed)
        logits, self.state = self.model.prefill(prompt, chunk_size=self.chunk_size, last_only=True)
        self.ids = logits[:, -1].argmax(-1)  # (B,) first generated token

    @torch.inference_mode()
    def fill(self, batch: int, seq_len: int) -> None:
        self.state = self.model.init_state(batch, device=self.device)
        self.state.kv.normal_(std=0.02)
        self.state.k_sum.normal_(std=0.02)
        self.state.pos.fill_(seq_len)
        self.ids = random_ids(self.vocab, batch, 1, self.device, self.seed)[:, 0]

    def _step(self) -> None:
        logits, _ = self.model.step(self.ids, self.state)  # state updated in place
        self.ids.copy_(logits[:, -1].argmax(-1))

    def end(self) -> None:
        super().end()
        self.state, self.ids = None, None

    def train_step(self, batch: int, seq_len: int) -> None:
        self.model.train()
        ids = random_ids(self.vocab, batch, seq_len, self.device, self.seed)
        mode = "parallel" if self.impl == "retnet-parallel" else "chunkwise"
        loss = self._lm_loss(self.model(ids, mode=mode, chunk_size=self.chunk_size), ids)
        loss.backward()
        self.model.zero_grad(set_to_none=False)  # keep grads allocated: a real training loop holds them

    def close(self) -> None:
        super().close()
        del self.model
