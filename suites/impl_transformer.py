"""Transformer contestants: our static-cache decoder (CUDA graph, chosen attention kernel), the paper-like
cat-grown cache, Hugging Face Llama out of the box (dynamic cache) and with its static cache, and training."""
from __future__ import annotations

import torch

from retnet_bench import baselines as tb
from retnet_bench.baselines import analytic as ta

from .contestants import Analytic, Contestant, random_ids


class TransformerContestant(Contestant):
    arch = "transformer"

    def __init__(self, preset: str, impl: str, kernel: str, device: torch.device, dtype: torch.dtype,
                 use_graph: bool = True, seed: int = 0):
        # only our static cache is captured in a CUDA graph; paper-like and HF run eagerly as their users would
        super().__init__(device, dtype, use_graph and impl == "static")
        self.impl, self.seed = impl, seed
        self.cfg = tb.TransformerConfig.from_name(preset)
        self.kernel = "bmm-softmax" if impl == "paper-like" else kernel
        torch.manual_seed(seed)
        # paper-like prefills with PyTorch's own SDPA choice: the decode step is what the flavour is about
        with torch.device(device):
            self.model = tb.Transformer(self.cfg, kernel="sdpa" if impl == "paper-like" else kernel).to(dtype)
        self.model.eval()
        self.n_params = sum(p.numel() for p in self.model.parameters())
        self.vocab = self.cfg.vocab_size
        self.max_seq_len = getattr(self.cfg, "max_seq_len", None)
        self.cache = None
        self.ids: torch.Tensor | None = None
        self.seq_len = 0
        if impl == "paper-like":
            self.notes = "KV cache grown by torch.cat and cut back to T before each step; rotary re-applied to all keys"

    def analytic(self, batch: int, seq_len: int) -> Analytic:
        return Analytic(
            weights_bytes=ta.weight_bytes(self.cfg, self.dtype),
            cache_bytes=ta.kv_cache_bytes(self.cfg, batch, seq_len, self.dtype),
            bytes_per_step=ta.decode_bytes_per_step(self.cfg, batch, seq_len, self.dtype),
            flops_per_token=ta.flops_per_token(self.cfg, seq_len),
        )

    @torch.inference_mode()
    def prefill(self, batch: int, seq_len: int) -> None:
        prompt = random_ids(self.vocab, batch, seq_len, self.device, self.seed)
        self.seq_len = seq_len
        if self.impl == "paper-like":
            self.cache = self.model.prefill_cat(prompt)
            logits = self.model.step_cat(prompt[:, -1], self.cache)  # first step builds the cache's shape
            self.cache.rewind_(seq_len)
        else:
            # capacity T+1: the step writes position T and attends over T+1 keys, nothing more
            self.cache = self.model.new_static_cache(batch, seq_len + 1, device=self.device, dtype=self.dtype)
            logits = self.model.prefill(prompt, self.cache, last_only=True)
        self.ids = logits[:, -1].argmax(-1)

    @torch.inference_mode()
    def fill(self, batch: int, seq_len: int) -> None:
        self.seq_len = seq_len
        if self.impl == "paper-like":
            from retnet_bench.baselines import CatKVCache

            shape = (batch * self.cfg.n_heads, seq_len, self.cfg.head_dim)
            new = lambda: torch.randn(shape, device=self.device, dtype=self.dtype)  # noqa: E731
            self.cache = CatKVCache([new() for _ in range(self.cfg.n_layers)], [new() for _ in range(self.cfg.n_layers)],
                                    batch)
        else:
            self.cache = self.model.new_static_cache(batch, seq_len + 1, device=self.device, dtype=self.dtype)
            self.cache.k.normal_()
            self.cache.v.normal_()
            self.cache.pos.fill_(seq_len)
        self.ids = random_ids(self.vocab, batch, 1, self.device, self.seed)[:, 0]

    def _step(self) -> None:
        if self.impl == "paper-like":
            logits = self.model.step_cat(self.ids, self.cache)  # grows the cache by one position, as torchscale
        else:
            self.cache.pos.fill_(self.seq_len)  # rewind: every step decodes at exactly T tokens of context
            logits = self.model.step(self.ids, self.cache)
        self.ids.copy_(logits[:, -1].argmax(-1))

    def _between_steps(self) -> None:
        if self.impl == "paper-like":
            self.cache.rewind_(self.seq_len)

    def end(self) -> None:
        super().end()
        self.cache, self.ids = None, None

    def train_step(self, batch: int, seq_len: int) -> None:
        self.model.train()
        ids = random_ids(self.vocab, batch, seq_len, self.device, self.seed)
        self._lm_loss(self.model(ids), ids).backward()
        self.model.zero_grad(set_to_none=False)

    def close(self) -> None:
        super().close()
        del self.model


class HFContestant(Contestant):
    """`LlamaForCausalLM` from a matched config, random weights, `attn_implementation="sdpa"`.

    `hf`: its default dynamic cache, eager, what a user gets out of the box. `hf-static`: its static cache,
    compiled with torch.compile on GPU (eager where compile is unavailable).
    """

    arch = "transformer"

    def __init__(self, preset: str, impl: str, device: torch.device, dtype: torch.dtype, seed: int = 0):
        super().__init__(device, dtype, use_graph=False)
        self.impl, self.kernel, self.seed = impl, "sdpa", seed
        self.cfg = tb.TransformerConfig.from_name(preset)
        torch.manual_seed(seed)
        self.model = tb.build_hf_llama(self.cfg, dtype=dtype, device=device, attn_implementation="sdpa")
        self.model.eval()
        self.n_params = sum(p.numel() for p in self.model.parameters())
        self.vocab = self.cfg.vocab_size
        self.max_seq_len = getattr(self.cfg, "max_seq_len", None)
        self.cache_kind = "static" if impl == "hf-static" else "dynamic"
        self.past = None
        self.ids: torch.Tensor | None = None
        self.seq_len = 0
        self.notes = f"transformers LlamaForCausalLM, {self.cache_kind} cache"

    def analytic(self, batch: int, seq_len: int) -> Analytic:
        per_param = torch.empty((), dtype=self.dtype).element_size()
        kv = ta.kv_cache_bytes(self.cfg, batch, seq_len, self.dtype)
        return Analytic(self.n_params * per_param, kv, self.n_params * per_param + kv, ta.flops_per_token(self.cfg, seq_len))

    @torch.inference_mode()
    def prefill(self, batch: int, seq_len: int) -> None:
        prompt = random_ids(self.vocab, batch, seq_len, self.device, self.seed)
        self.seq_len = seq_len
        self.past = tb.hf_prefill(self.model, prompt, cache=self.cache_kind, max_len=seq_len + 1)
        self.ids = prompt[:, -1]

    def _step(self) -> None:
        logits = tb.hf_step(self.model, self.ids, self.past)
        self.ids = logits[:, -1].argmax(-1)

    def _between_steps(self) -> None:
        tb.hf_rewind(self.past, self.seq_len)

    def end(self) -> None:
        super().end()
        self.past, self.ids = None, None

    def close(self) -> None:
        super().close()
        del self.model
