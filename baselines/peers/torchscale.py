"""torchscale 0.3.0, the paper authors' code: its RetNetDecoder (recurrent incremental decoding) and its Decoder with
xPos (the paper's baseline position encoding; the K/V cache grows by torch.cat every step and xPos is re-applied to
the whole key cache every step, exactly as the published code does).

RetNet variant: RMSNorm, decay 1 - 2^(-5-h), GLU FFN whose width (`glu_ffn_dim`) matches our preset's parameters to
well within 2%. torchscale cannot prefill a RetNet in one pass and its Transformer prefill at 8k is slow, so
`prefill_state` builds the incremental state directly at length T with random tensors of exactly the shapes, dtypes
and dict structure the peer's own decoding produces; the decode step cost is what is measured. Rows say so in `notes`.

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

from ..config import TransformerConfig
from .base import PREFILL_NOTE, Peer, build, glu_ffn_dim

TORCHSCALE_INSTALL = "pip install --no-deps torchscale==0.3.0 fairscale==0.4.0"
TOKEN_HEADROOM = 4096  # decode steps the torchscale id buffer holds before it has to grow


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



def torchscale_retnet_args(preset: str, chunk_size: int | None = None) -> Any:
    """torchscale RetNetConfig with our RetNet preset's sizes (value dim 2d, heads and layers as ours); every other
    field keeps torchscale's default (GELU inside the GLU, no sqrt(d) embedding scale, RMSNorm eps 1e-6).
    `chunk_size`: train in torchscale's chunkwise recurrent form with that chunk (the paper trained with 512)."""
    cfg = RetNetConfig.from_name(preset)
    ts = _import_torchscale()
    chunked = {} if chunk_size is None else dict(chunkwise_recurrent=True, recurrent_chunk_size=chunk_size)
    return ts.RetNetConfig(
        decoder_embed_dim=cfg.d_model, decoder_value_embed_dim=cfg.value_dim,
        decoder_retention_heads=cfg.n_heads, decoder_ffn_embed_dim=glu_ffn_dim(cfg),
        decoder_layers=cfg.n_layers, vocab_size=VOCAB_SIZE, dropout=0.0, drop_path_rate=0.0, **chunked,
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



def build_torchscale_retnet(preset: str, chunk_size: int | None = None) -> nn.Module:
    ts = _import_torchscale()
    args = torchscale_retnet_args(preset, chunk_size)
    embed = ts.TextEmbedding(args.vocab_size, args.decoder_embed_dim)
    return ts.RetNetDecoder(args, embed_tokens=embed)


def build_torchscale_transformer(preset: str) -> nn.Module:
    ts = _import_torchscale()
    args = torchscale_transformer_args(preset)
    embed = ts.TextEmbedding(args.vocab_size, args.decoder_embed_dim)
    return ts.Decoder(args, embed_tokens=embed)



def build_torchscale_retnet_peer(preset: str, dtype: torch.dtype, device: torch.device | str) -> Peer:
    return build(torchscale_available, build_torchscale_retnet, TorchscaleRetNetPeer, preset, dtype, device)


def build_torchscale_transformer_peer(preset: str, dtype: torch.dtype, device: torch.device | str) -> Peer:
    return build(torchscale_available, build_torchscale_transformer, TorchscaleTransformerPeer, preset, dtype, device)


def build_torchscale_for_training(family: str, preset: str, dtype: torch.dtype, device: torch.device | str,
                                  chunk_size: int = 512) -> nn.Module:
    """torchscale's RetNetDecoder in its chunkwise recurrent form (chunk `chunk_size`, as the paper trained) or its
    xPos Decoder, in train mode, on `device` in `dtype`: the paper's own training pipeline for Table 4. Its forward
    takes ids (B, T) and returns (logits (B, T, V), extras)."""
    ok, why = torchscale_available()
    if not ok:
        raise RuntimeError(why)
    device = torch.device(device)
    with torch.device(device):
        model = build_torchscale_retnet(preset, chunk_size) if family == "retnet" else build_torchscale_transformer(preset)
    return model.to(dtype).train()
