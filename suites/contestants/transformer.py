"""Transformer contestants: our static-cache decoder (CUDA graph, chosen attention kernel), the paper-like
cat-grown cache, Hugging Face Llama out of the box (dynamic cache) and with its static cache, and training."""
from __future__ import annotations

import torch

from retnet_bench import baselines as tb
from retnet_bench.baselines import analytic as ta

from .base import Analytic, Contestant, kv_cache_costs, random_ids
from .spec import Availability, BuildArgs, ContestantSpec, contestant


def transformer_config(preset: str, n_kv_heads: int | None) -> tb.TransformerConfig:
    """The matched Transformer preset; with fewer KV heads than query heads, the parameter-matched GQA/MQA variant."""
    base = tb.TransformerConfig.from_name(preset)
    if n_kv_heads is None or n_kv_heads == base.n_heads:
        return base
    return tb.TransformerConfig.from_name(preset, n_kv_heads=n_kv_heads)


def _kv_heads(cfg: tb.TransformerConfig) -> int:
    return getattr(cfg, "n_kv_heads", None) or cfg.n_heads


def _costs(c: Contestant, cfg: tb.TransformerConfig, batch: int, seq_len: int) -> Analytic:
    return kv_cache_costs(c.n_params, cfg.vocab_size, cfg.d_model, batch, c.dtype.itemsize,
                          lambda t: ta.kv_cache_bytes(cfg, batch, t, c.dtype), seq_len,
                          ta.flops_per_token(cfg, seq_len))


class TransformerContestant(Contestant):
    arch = "transformer"

    def __init__(self, spec: ContestantSpec, a: BuildArgs):
        # only our static cache is captured in a CUDA graph; paper-like and HF run eagerly as their users would
        impl, kernel, device, dtype, seed = spec.name, a.kernel, a.device, a.dtype, a.seed
        super().__init__(device, dtype, a.use_graph and impl == "static")
        self.impl, self.seed = impl, seed
        if a.variant.state_dtype is not None:  # a quantized KV cache: a labelled variant only where a kernel takes it
            from retnet_bench.baselines.kernels import KernelUnavailableError
            from retnet_bench.baselines.quantized_kv import fp8_kv_cache_available

            ok, why = fp8_kv_cache_available(device, kernel)
            if not ok:
                raise KernelUnavailableError(why)
        self.cfg = transformer_config(a.preset, a.variant.n_kv_heads)
        self.kernel = kernel
        torch.manual_seed(seed)
        # paper-like prefills with PyTorch's own SDPA choice: the decode step is what the flavour is about
        with torch.device(device):
            # only `static` steps through the projection setting (paper-like's torch.cat step keeps nn.Linear)
            self.model = tb.Transformer(self.cfg, kernel="sdpa" if impl == "paper-like" else kernel,
                                        decode_gemm=a.decode_gemm if impl == "static" else "torch").to(dtype)
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
        return _costs(self, self.cfg, batch, seq_len)

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

            shape = (batch * _kv_heads(self.cfg), seq_len, self.cfg.head_dim)
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

    @property
    def works_between_steps(self) -> bool:
        return self.impl == "paper-like"  # `static` rewinds inside its captured step

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

    def __init__(self, spec: ContestantSpec, a: BuildArgs):
        impl, device, dtype, seed = spec.name, a.device, a.dtype, a.seed
        super().__init__(device, dtype, use_graph=False)
        self.impl, self.kernel, self.seed = impl, a.kernel, seed
        self.cfg = transformer_config(a.preset, a.variant.n_kv_heads)
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
        return _costs(self, self.cfg, batch, seq_len)

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

    @property
    def works_between_steps(self) -> bool:
        return self.cache_kind == "dynamic"  # a static HF cache only resets its position

    def end(self) -> None:
        super().end()
        self.past, self.ids = None, None

    def close(self) -> None:
        super().close()
        del self.model


def _attention_kernel_available(phase: str):
    def check(kernel: str, device: torch.device, dtype: torch.dtype) -> Availability:
        # a decode contestant needs the kernel's masked single-query path (sdpa-flash has none)
        return tb.kernel_available(kernel, device, dtype, phase=phase)
    return check


_ATTENTION = tuple(tb.KERNELS)


@contestant(name="static", arch="transformer", role="baseline", phases=("decode", "capacity"),
            description="Transformer, preallocated KV cache, in-place writes, one CUDA graph per step, chosen kernel",
            kernels=_ATTENTION, default_kernel="sdpa", available=_attention_kernel_available("decode"),
            variants=("n_kv_heads", "kv_dtype"), decode_gemm=True)
@contestant(name="paper-like", arch="transformer", role="baseline", phases=("decode", "capacity"),
            description="Transformer as the paper's pipeline decoded: torch.cat-grown cache, bmm + fp32 softmax",
            default_kernel="bmm-softmax", pipeline="paper")
@contestant(name="transformer", arch="transformer", role="baseline", phases=("train",),
            description="Transformer training with the chosen attention kernel",
            kernels=_ATTENTION, default_kernel="sdpa", available=_attention_kernel_available("train"),
            variants=("n_kv_heads",), recipe=lambda a: _recipe(a))
def build_transformer(spec: ContestantSpec, args: BuildArgs) -> TransformerContestant:
    return TransformerContestant(spec, args)


def _recipe(a: BuildArgs):
    from ..training import ModelRecipe

    base = tb.TransformerConfig.from_name(a.preset)
    gqa = a.variant.n_kv_heads not in (None, base.n_heads)
    return ModelRecipe("transformer", a.preset, kernel=a.kernel, overrides={"n_kv_heads": a.variant.n_kv_heads} if gqa else {})


@contestant(name="hf", arch="transformer", role="baseline", phases=("decode", "capacity"),
            description="Hugging Face LlamaForCausalLM, SDPA, dynamic cache", default_kernel="sdpa",
            variants=("n_kv_heads",))
@contestant(name="hf-static", arch="transformer", role="baseline", phases=("decode", "capacity"),
            description="Hugging Face LlamaForCausalLM, static cache (torch.compile on GPU)", default_kernel="sdpa",
            variants=("n_kv_heads",))
def build_hf(spec: ContestantSpec, args: BuildArgs) -> HFContestant:
    return HFContestant(spec, args)
