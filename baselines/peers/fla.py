"""flash-linear-attention's `RetNetForCausalLM` (pinned 0.6.0, whose cache layer implements transformers 5.x's
abstract `get_max_length`; 0.3.2's cannot be instantiated under transformers 5.x), decoding through its own
`past_key_values` (`FLACache`) with its Triton kernels (CUDA only). Its variant: RMSNorm, decay 1 - 2^(-5-h), SwiGLU
FFN whose width is `glu_ffn_dim`, swish output gate; parameters within 2% of our RetNet preset
(`fla_retnet_param_count`). Its state is pre-filled at length T, like the torchscale peers'.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from typing import Any

import torch
from torch import nn

from retnet.config import VOCAB_SIZE, RetNetConfig

from .base import PREFILL_NOTE, Peer, build, glu_ffn_dim

FLA_VERSION = "0.6.0"  # the cache layout pre-filled below is 0.6.0's (FLACache of FLALayer); other versions differ
FLA_INSTALL = f"pip install flash-linear-attention=={FLA_VERSION}"  # pulls fla-core=={FLA_VERSION} (kernels)


def _fla_installed_version() -> str | None:
    """Version of the installed flash-linear-attention distribution; None when `fla` is absent, "unknown" when the
    package imports but has no distribution metadata (a source tree on sys.path)."""
    if importlib.util.find_spec("fla") is None:
        return None
    try:
        return importlib.metadata.version("flash-linear-attention")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def fla_available() -> tuple[bool, str]:
    """fla's kernels are Triton: it needs the pinned package, triton and a CUDA device (fla.utils queries the active
    Triton driver at import time, so importing without a GPU fails even when everything is installed).

    Only FLA_VERSION is accepted: the peer pre-fills fla's cache objects directly, and their layout changes between
    releases (0.3.2's cache layer cannot even be instantiated under transformers 5.x)."""
    installed = _fla_installed_version()
    if installed is None:
        return False, f"flash-linear-attention not installed: {FLA_INSTALL}"
    if installed != FLA_VERSION:
        return False, (f"flash-linear-attention {installed} installed, the fla peer is written for {FLA_VERSION}'s "
                       f"cache API: {FLA_INSTALL}")
    if importlib.util.find_spec("triton") is None:
        return False, "triton not installed (flash-linear-attention's kernels need it)"
    if not torch.cuda.is_available():
        return False, "fla's RetNet needs a CUDA GPU (Triton kernels)"
    try:
        importlib.import_module("fla.models")
    except Exception as e:  # noqa: BLE001
        return False, f"flash-linear-attention import failed: {type(e).__name__}: {e}"
    return True, ""



def fla_retnet_kwargs(preset: str) -> dict[str, Any]:
    """fla 0.6.0 RetNetConfig keyword arguments for our RetNet preset: width, depth and heads as ours, key dim d and
    value dim 2d (expand_k=1, expand_v=value_dim/d), SwiGLU width `glu_ffn_dim`, untied embeddings. Fields that
    shape the parameter count are spelled out so a changed fla default cannot move it silently."""
    cfg = RetNetConfig.from_name(preset)
    return dict(
        hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers, num_heads=cfg.n_heads, num_kv_heads=None,
        expand_k=1.0, expand_v=cfg.value_dim / cfg.d_model, intermediate_size=glu_ffn_dim(cfg), hidden_act="swish",
        use_short_conv=False, use_output_gate=True, elementwise_affine=True, fuse_norm=True, attn=None,
        vocab_size=VOCAB_SIZE, tie_word_embeddings=False, use_cache=True, attn_mode="chunk",
    )


def fla_retnet_param_count(kwargs: dict[str, Any]) -> int:
    """Parameters of fla 0.6.0's RetNetForCausalLM built from `kwargs` (as `fla_retnet_kwargs` gives), from its module
    layout: per block two RMSNorms (d), MultiScaleRetention q/k (d x dk), v/g (d x dv), o (dv x d) and the gated
    head norm (dv / H), GatedMLP gate/up/down (3 d f); embedding and lm_head (V x d each, untied) and a final RMSNorm.
    The GPU test checks it against the model as built."""
    d, n_heads, f = kwargs["hidden_size"], kwargs["num_heads"], kwargs["intermediate_size"]
    dk, dv = round(d * kwargs["expand_k"]), round(d * kwargs["expand_v"])
    per_block = 2 * d + 2 * d * dk + 3 * d * dv + dv // n_heads + 3 * d * f
    return kwargs["num_hidden_layers"] * per_block + 2 * kwargs["vocab_size"] * d + d



class FlaRetNetPeer(Peer):
    notes = (f"flash-linear-attention {FLA_VERSION} RetNetForCausalLM, fused_recurrent Triton decode through its "
             "own past_key_values cache; " + PREFILL_NOTE.format(what="recurrent state"))

    def prefill_state(self, batch_size: int, seq_len: int) -> None:
        """Build fla 0.6.0's cache as MultiScaleRetention leaves it after T tokens.

        fla's `Cache` (an `FLACache`) holds one `FLALayer` per block; each layer's `state` dict carries
        `recurrent_state` (B, H, dk_head, dv_head) in float32 (the kernels' final-state dtype, key-first layout) and
        its own seen-token counter, which `get_seq_length(layer_idx)` returns and the layer uses as its rotary offset.
        `update(..., offset=T)` on an empty layer sets both, exactly as the layer's own `update_layer_cache(...,
        offset=q_len)` does after a length-T prompt (conv/attn/ffn states stay None: no short conv, no attention
        layers). It must be the `Cache` subclass itself: RetNetModel rebuilds anything else via from_legacy_cache."""
        from fla.models.cache_utils import Cache

        self.batch_size, self.seq_len, self.pos = batch_size, seq_len, seq_len
        self.cache = Cache()
        if seq_len > 0:
            for block in self.model.model.layers:
                attn = block.attn  # MultiScaleRetention
                state = self._random(batch_size, attn.num_heads, attn.head_k_dim, attn.head_v_dim,
                                     dtype=torch.float32, std=attn.head_k_dim**-0.5)  # (B, H, dk, dv)
                self.cache.update(recurrent_state=state, layer_idx=attn.layer_idx, offset=seq_len)
        self.ids = torch.randint(0, self.vocab_size, (batch_size, 1), device=self.device)

    @torch.inference_mode()
    def step(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        if ids is not None:
            self.ids = ids.view(-1, 1)
        out = self.model(input_ids=self.ids, past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        self.cache, self.pos = out.past_key_values, self.pos + 1
        self.ids = out.logits[:, -1:].argmax(-1)  # (B, 1)
        return out.logits

    def _state_tensors(self) -> list[torch.Tensor]:
        if not self.batch_size:
            return []
        return [s["recurrent_state"] for s in self.cache if s and s.get("recurrent_state") is not None]

    def state_bytes_at(self, batch_size: int, seq_len: int) -> int:
        if seq_len == 0:
            return 0
        attn = self.model.model.layers[0].attn  # recurrent_state (B, H, dk_head, dv_head), float32
        return len(self.model.model.layers) * batch_size * attn.num_heads * attn.head_k_dim * attn.head_v_dim * 4

    def reset(self) -> None:
        super().reset()
        self.cache, self.ids = None, None



def build_fla_retnet(preset: str) -> nn.Module:
    from fla.models.retnet import RetNetConfig as FlaRetNetConfig
    from fla.models.retnet import RetNetForCausalLM

    return RetNetForCausalLM(FlaRetNetConfig(**fla_retnet_kwargs(preset)))



def build_fla_retnet_peer(preset: str, dtype: torch.dtype, device: torch.device | str) -> Peer:
    return build(fla_available, build_fla_retnet, FlaRetNetPeer, preset, dtype, device)
