"""Official-code peers: the published RetNet / Transformer implementations, run through their own decoding.

Three peers, sized to our presets so they sit in the same sweeps:

- `torchscale-retnet`: torchscale 0.3.0's `RetNetDecoder` (the paper authors' code) with its recurrent incremental
  decoding. Its variant: RMSNorm, decay 1 - 2^(-5-h), GLU FFN; the GLU width is chosen so parameters match our
  RetNet preset (FFN d -> 2d -> d, 4 d^2 per layer) to well within 2%.
- `torchscale-transformer`: torchscale 0.3.0's `Decoder` with xPos (`xpos_rel_pos=True`, the paper's baseline
  position encoding), FFN 4d, its incremental decoding: the K/V cache grows by `torch.cat` every step and xPos is
  re-applied to the whole key cache every step, exactly as the published code does.
- `fla-retnet`: flash-linear-attention's `RetNetForCausalLM` (pinned 0.6.0, whose cache layer implements
  transformers 5.x's abstract `get_max_length`; 0.3.2's cannot be instantiated under transformers 5.x), decoding
  through its own `past_key_values` (`FLACache`) with its Triton kernels (CUDA only). Its variant: RMSNorm, decay
  1 - 2^(-5-h), SwiGLU FFN whose width is `glu_ffn_dim`, swish output gate; parameters within 2% of our RetNet preset
  (`fla_retnet_param_count`).

torchscale cannot prefill a RetNet in one pass and its Transformer prefill at 8k is slow, so `prefill_state`
builds the incremental state directly at length T with random tensors of exactly the shapes, dtypes and dict
structure the peer's own decoding produces; the decode step cost is what is measured. Rows say so in `notes`.

Install: `pip install --no-deps torchscale==0.3.0 fairscale==0.4.0` (torchscale's own pins drag in torchvision and
a second torch). torchscale imports `timm.models.layers.drop_path` for stochastic depth only; when timm cannot be
imported we put a small stand-in module in `sys.modules` for the duration of the torchscale import and remove it
afterwards (drop-path is never active here: drop_path_rate=0 and eval mode).
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
import types
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn

from retnet.config import VOCAB_SIZE, RetNetConfig

from .config import TransformerConfig

PEERS = ("torchscale-retnet", "torchscale-transformer", "fla-retnet")
TORCHSCALE_INSTALL = "pip install --no-deps torchscale==0.3.0 fairscale==0.4.0"
FLA_VERSION = "0.6.0"  # the cache layout pre-filled below is 0.6.0's (FLACache of FLALayer); other versions differ
FLA_INSTALL = f"pip install flash-linear-attention=={FLA_VERSION}"  # pulls fla-core=={FLA_VERSION} (kernels)
TOKEN_HEADROOM = 4096  # decode steps the torchscale id buffer holds before it has to grow
PREFILL_NOTE = "incremental state pre-filled with random {what} to length T (no prompt forward); decode step timed"


# ------------------------------------------------------------------------------------------------ availability

def _timm_drop_path(x: torch.Tensor, drop_prob: float = 0.0, training: bool = False) -> torch.Tensor:
    """Stochastic depth, same contract as timm.models.layers.drop_path (stand-in when timm is absent)."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


@contextmanager
def _timm_stand_in() -> Iterator[None]:
    """Provide `timm.models.layers.drop_path` only while torchscale is imported, and only if timm is missing.

    The stand-in is removed afterwards so that other libraries probing for timm (transformers uses
    importlib.util.find_spec) do not mistake it for a real installation; torchscale keeps its bound reference.
    """
    try:
        importlib.import_module("timm.models.layers")
        have_timm = True
    except ImportError:
        have_timm = False
    if have_timm:  # yield outside the try: an ImportError from the caller's body must propagate, not be caught here
        yield
        return
    names = ("timm", "timm.models", "timm.models.layers")
    saved = {n: sys.modules.get(n) for n in names}
    mods = {n: types.ModuleType(n) for n in names}
    mods["timm"].models = mods["timm.models"]
    mods["timm.models"].layers = mods["timm.models.layers"]
    mods["timm.models.layers"].drop_path = _timm_drop_path
    sys.modules.update(mods)
    try:
        yield
    finally:
        for n, old in saved.items():
            if old is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = old


def _import_torchscale() -> types.SimpleNamespace:
    """The torchscale classes we use; raises ImportError (with the missing module's name) when absent."""
    with _timm_stand_in():
        config = importlib.import_module("torchscale.architecture.config")
        retnet_arch = importlib.import_module("torchscale.architecture.retnet")
        decoder = importlib.import_module("torchscale.architecture.decoder")
        embedding = importlib.import_module("torchscale.component.embedding")
    return types.SimpleNamespace(
        RetNetConfig=config.RetNetConfig, DecoderConfig=config.DecoderConfig,
        RetNetDecoder=retnet_arch.RetNetDecoder, Decoder=decoder.Decoder, TextEmbedding=embedding.TextEmbedding,
    )


def torchscale_available() -> tuple[bool, str]:
    try:
        _import_torchscale()
    except ImportError as e:
        missing = getattr(e, "name", None) or "torchscale"
        return False, f"{missing.split('.')[0]} not installed: {TORCHSCALE_INSTALL} ({e})"
    except Exception as e:  # noqa: BLE001 - an installed but broken torchscale is still "not available"
        return False, f"torchscale import failed: {type(e).__name__}: {e}"
    return True, ""


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
        return False, (f"flash-linear-attention {installed} installed, fla-retnet is written for {FLA_VERSION}'s "
                       f"cache API: {FLA_INSTALL}")
    if importlib.util.find_spec("triton") is None:
        return False, "triton not installed (flash-linear-attention's kernels need it)"
    if not torch.cuda.is_available():
        return False, "fla-retnet needs a CUDA GPU (Triton kernels)"
    try:
        importlib.import_module("fla.models")
    except Exception as e:  # noqa: BLE001
        return False, f"flash-linear-attention import failed: {type(e).__name__}: {e}"
    return True, ""


def peer_available(name: str) -> tuple[bool, str]:
    """(True, "") when peer `name` can be built here, else (False, why) for a `skipped` row."""
    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}; known: {', '.join(PEERS)}")
    return fla_available() if name == "fla-retnet" else torchscale_available()


# ------------------------------------------------------------------------------------------------ sizes

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


def torchscale_retnet_args(preset: str) -> Any:
    """torchscale RetNetConfig with our RetNet preset's sizes (value dim 2d, heads and layers as ours); every other
    field keeps torchscale's default (GELU inside the GLU, no sqrt(d) embedding scale, RMSNorm eps 1e-6)."""
    cfg = RetNetConfig.from_name(preset)
    ts = _import_torchscale()
    return ts.RetNetConfig(
        decoder_embed_dim=cfg.d_model, decoder_value_embed_dim=cfg.value_dim,
        decoder_retention_heads=cfg.n_heads, decoder_ffn_embed_dim=glu_ffn_dim(cfg),
        decoder_layers=cfg.n_layers, vocab_size=VOCAB_SIZE, dropout=0.0, drop_path_rate=0.0,
    )


def torchscale_transformer_args(preset: str) -> Any:
    """torchscale DecoderConfig with xPos, our Transformer preset's width/depth/heads and FFN 4d; every other field
    keeps torchscale's default (pre-LN with sub-LN, GELU, biases, no sqrt(d) embedding scale)."""
    cfg = TransformerConfig.from_name(preset)
    ts = _import_torchscale()
    return ts.DecoderConfig(
        decoder_embed_dim=cfg.d_model, decoder_attention_heads=cfg.n_heads, decoder_ffn_embed_dim=cfg.ffn_dim,
        decoder_layers=cfg.n_layers, vocab_size=VOCAB_SIZE, xpos_rel_pos=True, dropout=0.0, drop_path_rate=0.0,
    )


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


# ------------------------------------------------------------------------------------------------ peers

class Peer:
    """One decoding model behind the runner's interface. Subclasses own their cache/state format.

    Token ids fed to `step` are the greedy argmax of the previous step's logits (like our own contestants).
    """

    name: str = ""
    arch: str = ""
    kernel: str = ""
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


class _TorchscalePeer(Peer):
    """torchscale decoders take the whole prefix `tokens[:, :pos+1]` (fairseq style) and embed only the last token;
    the RetNet derives the rotation angle from that prefix length. We keep one id buffer and pass views of it."""

    kernel = "torchscale"

    def prefill_state(self, batch_size: int, seq_len: int) -> None:
        self.batch_size, self.seq_len, self.pos = batch_size, seq_len, seq_len
        # ids for the T prefix positions (never read: only the last id is embedded) and the steps to come
        self.tokens = torch.randint(0, self.vocab_size, (batch_size, seq_len + 1 + TOKEN_HEADROOM), device=self.device)
        self.state: dict[Any, Any] = {i: {} for i in range(len(self.model.layers))}
        if seq_len > 0:
            self._fill_state(batch_size, seq_len)

    def _fill_state(self, batch_size: int, seq_len: int) -> None:
        raise NotImplementedError

    @torch.inference_mode()
    def step(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        if ids is not None:
            self.tokens[:, self.pos] = ids
        logits, _ = self.model(self.tokens[:, : self.pos + 1], incremental_state=self.state)  # (B, 1, V)
        self.pos += 1
        if self.pos == self.tokens.shape[1]:  # out of headroom: double the id buffer (rare, outside steady state)
            self.tokens = torch.cat([self.tokens, torch.zeros_like(self.tokens)], dim=1)
        self.tokens[:, self.pos] = logits[:, -1].argmax(-1)
        return logits

    def _state_tensors(self) -> list[torch.Tensor]:
        if not self.batch_size:
            return []
        return [t for layer in self.state.values() for t in layer.values() if isinstance(t, torch.Tensor)]

    def reset(self) -> None:
        super().reset()
        self.state, self.tokens = {}, None


class TorchscaleRetNetPeer(_TorchscalePeer):
    name, arch = "torchscale-retnet", "retnet"
    notes = "torchscale 0.3.0 RetNetDecoder, recurrent incremental decoding; " + PREFILL_NOTE.format(
        what="retention state (prev_key_value, scale)")

    def _fill_state(self, batch_size: int, seq_len: int) -> None:
        """Per layer, what MultiScaleRetention.recurrent_forward leaves after T tokens:
        prev_key_value (B, H, dv_head, dk_head) in the model dtype, and scale (H,) = sum_{i<T} gamma^i
        (its running normaliser, which after T steps equals (1 - gamma^T) / (1 - gamma))."""
        ret = self.model.layers[0].retention
        n_heads, dk, dv = ret.num_heads, ret.key_dim, ret.head_dim
        decay = self.model.retnet_rel_pos.decay  # log gamma, (H,), in whatever dtype the model was cast to
        gamma = decay.double().exp()
        scale = ((1 - gamma**seq_len) / (1 - gamma)).to(decay.dtype)
        for layer_state in self.state.values():
            layer_state["prev_key_value"] = self._random(batch_size, n_heads, dv, dk, std=dk**-0.5)
            layer_state["scale"] = scale.clone()

    def state_bytes_at(self, batch_size: int, seq_len: int) -> int:
        ret = self.model.layers[0].retention  # prev_key_value (B, H, dv, dk) and scale (H,), model dtype
        per_layer = (batch_size * ret.head_dim * ret.key_dim + 1) * ret.num_heads
        return len(self.model.layers) * per_layer * self.model.retnet_rel_pos.decay.element_size()


class TorchscaleTransformerPeer(_TorchscalePeer):
    name, arch = "torchscale-transformer", "transformer"
    notes = ("torchscale 0.3.0 Decoder with xPos, incremental decoding (K/V cache grown by torch.cat, xPos "
             "re-applied to the whole key cache each step); " + PREFILL_NOTE.format(what="K/V"))

    def _fill_state(self, batch_size: int, seq_len: int) -> None:
        """Per layer, what MultiheadAttention keeps: prev_key / prev_value (B, H, T, head_dim), keys before xPos."""
        attn = self.model.layers[0].self_attn
        for layer_state in self.state.values():
            layer_state["prev_key"] = self._random(batch_size, attn.num_heads, seq_len, attn.head_dim)
            layer_state["prev_value"] = self._random(batch_size, attn.num_heads, seq_len, attn.head_dim)

    def state_bytes_at(self, batch_size: int, seq_len: int) -> int:
        attn = self.model.layers[0].self_attn  # prev_key and prev_value (B, H, T, head_dim), model dtype
        elem = torch.empty((), dtype=self.dtype).element_size()
        return len(self.model.layers) * 2 * batch_size * attn.num_heads * seq_len * attn.head_dim * elem

    def rewind(self) -> None:
        """Cut the cat-grown cache back to T tokens as contiguous tensors, the layout torchscale's own torch.cat
        leaves (a strided view would make the next cat slower than in real decoding)."""
        super().rewind()
        for layer_state in self.state.values():
            for key in ("prev_key", "prev_value"):
                if key in layer_state and layer_state[key].shape[2] != self.seq_len:
                    layer_state[key] = layer_state[key][:, :, : self.seq_len].contiguous()


class FlaRetNetPeer(Peer):
    name, arch, kernel = "fla-retnet", "retnet", "fla"
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


# ------------------------------------------------------------------------------------------------ building

def _cast(model: nn.Module, dtype: torch.dtype, device: torch.device) -> nn.Module:
    """Build in float32, then cast (as fairseq's --fp16/--bf16 does), and give the float32 copy back."""
    model = model.to(dtype)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return model


def build_torchscale_retnet(preset: str) -> nn.Module:
    ts = _import_torchscale()
    args = torchscale_retnet_args(preset)
    embed = ts.TextEmbedding(args.vocab_size, args.decoder_embed_dim)
    return ts.RetNetDecoder(args, embed_tokens=embed)


def build_torchscale_transformer(preset: str) -> nn.Module:
    ts = _import_torchscale()
    args = torchscale_transformer_args(preset)
    embed = ts.TextEmbedding(args.vocab_size, args.decoder_embed_dim)
    return ts.Decoder(args, embed_tokens=embed)


def build_fla_retnet(preset: str) -> nn.Module:
    from fla.models.retnet import RetNetConfig as FlaRetNetConfig
    from fla.models.retnet import RetNetForCausalLM

    return RetNetForCausalLM(FlaRetNetConfig(**fla_retnet_kwargs(preset)))


_BUILDERS = {
    "torchscale-retnet": (build_torchscale_retnet, TorchscaleRetNetPeer),
    "torchscale-transformer": (build_torchscale_transformer, TorchscaleTransformerPeer),
    "fla-retnet": (build_fla_retnet, FlaRetNetPeer),
}


def build_peer(name: str, preset: str, dtype: torch.dtype, device: torch.device | str) -> Peer:
    """Peer `name` at our preset's sizes with random weights, on `device` in `dtype`."""
    ok, why = peer_available(name)
    if not ok:
        raise RuntimeError(f"{name}: {why}")
    device = torch.device(device)
    builder, peer_cls = _BUILDERS[name]
    with torch.device(device):
        model = builder(preset)
    return peer_cls(_cast(model, dtype, device), dtype, device)


__all__ = ["PEERS", "Peer", "build_peer", "peer_available", "fla_available", "torchscale_available",
           "glu_ffn_dim", "torchscale_retnet_args", "torchscale_transformer_args", "fla_retnet_kwargs",
           "fla_retnet_param_count"]
