"""Decoder-only Transformer matched to the RetNet presets, with three ways to decode.

Architecture (pre-LN, as torchscale's decoder): token embedding -> n_layers x [LayerNorm -> causal MHA with
rotary -> residual, LayerNorm -> Linear(d, 4d) -> GELU -> Linear(4d, d) -> residual] -> LayerNorm -> untied head.
No biases, so each layer has exactly 12 d^2 matrix parameters (+ 4d LayerNorm), like a RetNet layer.

Decoding:
  forward(ids)              full causal forward with the chosen kernel (training path), (B, T, V)
  prefill / step            `static`: preallocated StaticKVCache, in-place writes, mask built on device from
                            cache.pos, so step() has static shapes and no host sync -> CUDA-graph capturable
  prefill_cat / step_cat    `paper-like`: torchscale incremental decoding (torch.cat-grown cache, rotation
                            re-applied to the whole cached key each step, bmm + fp32 softmax + bmm)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cache import CAPACITY_MULTIPLE, CatKVCache, StaticKVCache
from .config import TransformerConfig
from .fused_norm import add_layer_norm
from .kernels import (causal_attention, check_kernel, decode_attention_flash_attn, decode_attention_flash_attn_4,
                      decode_attention_sdpa, sdpa_context, uses_bshd_cache)
from .rotary import apply_rotary, apply_rotary_rolled, rotary_tables, signed_sin


class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig, kernel: str, **factory):
        super().__init__()
        self.n_heads, self.head_dim, self.kernel = cfg.n_heads, cfg.head_dim, kernel
        self.rope_theta = cfg.rope_theta
        self.wqkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False, **factory)  # fused: one GEMM per step
        self.wo = nn.Linear(cfg.d_model, cfg.d_model, bias=False, **factory)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, _ = x.shape
        return self.wqkv(x).view(b, t, 3, self.n_heads, self.head_dim).unbind(2)  # 3 x (B, T, H, D)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """Causal attention over x (B, T, d). cos/sin (T, D). Returns (y (B, T, d), k_raw, k_rot, v) with the
        keys/values as (B, T, H, D) so a caller can fill a cache from them."""
        b, t, d = x.shape
        q, k_raw, v = self._qkv(x)
        cos, sin = cos[:, None, :], sin[:, None, :]  # (T, 1, D) broadcasts over heads
        q, k = apply_rotary(q, cos, sin), apply_rotary(k_raw, cos, sin)
        y = causal_attention(q, k, v, self.kernel)  # (B, T, H, D)
        return self.wo(y.reshape(b, t, d)), k_raw, k, v

    def step(self, x: torch.Tensor, cache: StaticKVCache, i: int, cos: torch.Tensor, sin_signed: torch.Tensor,
             mask: torch.Tensor | None, seqlens: torch.Tensor | None) -> torch.Tensor:
        """One token per sequence. x (B, 1, d); cos/sin_signed (1, 1, 1, 1, D) for position cache.pos."""
        b, _, d = x.shape
        qkv = self.wqkv(x).view(b, 1, 3, self.n_heads, self.head_dim)
        qk = apply_rotary_rolled(qkv[:, :, :2], cos, sin_signed)  # q and k rotated together: (B, 1, 2, H, D)
        q, k, v = qk[:, :, 0], qk[:, :, 1], qkv[:, :, 2]  # (B, 1, H, D)
        k_cache, v_cache = cache.layer(i)
        if self.kernel == "flash-attn":
            y = decode_attention_flash_attn(q, k_cache, v_cache, k, v, seqlens)  # writes K/V itself
        elif self.kernel == "flash-attn-4":
            k_cache.index_copy_(1, cache.pos, k)  # (B, S, H, D) at slot pos
            v_cache.index_copy_(1, cache.pos, v)
            y = decode_attention_flash_attn_4(q, k_cache, v_cache, seqlens)
        else:
            k_cache.index_copy_(2, cache.pos, k.transpose(1, 2))  # (B, H, S, D) at slot pos
            v_cache.index_copy_(2, cache.pos, v.transpose(1, 2))
            y = decode_attention_sdpa(q.transpose(1, 2), k_cache, v_cache, mask, self.kernel).transpose(1, 2)
        return self.wo(y.reshape(b, 1, d))

    def step_cat(self, x: torch.Tensor, cache: CatKVCache, i: int) -> torch.Tensor:
        """torchscale-style incremental step: x (B, 1, d)."""
        b, _, d = x.shape
        h, hd = self.n_heads, self.head_dim
        q, k, v = (t.transpose(1, 2).reshape(b * h, 1, hd) for t in self._qkv(x))  # (B*H, 1, D)
        cache.k[i] = torch.cat([cache.k[i], k], dim=1)  # (B*H, S, D): a new allocation every step
        cache.v[i] = torch.cat([cache.v[i], v], dim=1)
        s = cache.k[i].shape[1]
        # tables for all S positions recomputed every call and the whole key re-rotated, as XPOS.forward did
        cos, sin = rotary_tables(s, hd, self.rope_theta, device=x.device)
        k_rot = apply_rotary(cache.k[i], cos, sin)
        q = apply_rotary(q, cos[-1:], sin[-1:]) * hd ** -0.5
        w = torch.bmm(q, k_rot.transpose(1, 2))  # (B*H, 1, S)
        # torchscale: softmax in float32, cast back (float64 stays float64 so CPU tests can check to 1e-12)
        w = F.softmax(w, dim=-1, dtype=torch.promote_types(w.dtype, torch.float32)).type_as(w)
        y = torch.bmm(w, cache.v[i])  # (B*H, 1, D)
        return self.wo(y.view(b, h, 1, hd).transpose(1, 2).reshape(b, 1, d))


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig, kernel: str, **factory):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, **factory)
        self.attn = Attention(cfg, kernel, **factory)
        self.ln2 = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, **factory)
        self.fc1 = nn.Linear(cfg.d_model, cfg.ffn_dim, bias=False, **factory)
        self.fc2 = nn.Linear(cfg.ffn_dim, cfg.d_model, bias=False, **factory)

    def ffn(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.ln2(x))))


class Transformer(nn.Module):
    def __init__(self, cfg: TransformerConfig, kernel: str = "sdpa", device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None):
        super().__init__()
        self.cfg, self.kernel = cfg, check_kernel(kernel)
        factory = dict(device=device, dtype=dtype)
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model, **factory)
        self.layers = nn.ModuleList(Block(cfg, kernel, **factory) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, **factory)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False, **factory)

    # ------------------------------------------------------------------------------------------ full sequence
    def _trunk(self, input_ids: torch.Tensor, on_layer=None) -> torch.Tensor:
        """Causal pass over (B, T) ids -> hidden (B, T, d); on_layer(i, k_raw, k_rot, v) sees each layer's K/V."""
        cos, sin = rotary_tables(input_ids.shape[1], self.cfg.head_dim, self.cfg.rope_theta, input_ids.device)
        x = self.tok_emb(input_ids)  # (B, T, d)
        with sdpa_context(self.kernel):
            for i, layer in enumerate(self.layers):
                y, k_raw, k_rot, v = layer.attn(layer.ln1(x), cos, sin)
                if on_layer is not None:
                    on_layer(i, k_raw, k_rot, v)
                x = x + y
                x = x + layer.ffn(x)
        return x

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) -> logits (B, T, V), causal, with the chosen kernel."""
        return self.lm_head(self.norm(self._trunk(input_ids)))

    # ------------------------------------------------------------------------------------------ static cache
    def new_static_cache(self, batch_size: int, max_len: int, device: torch.device | str | None = None,
                         dtype: torch.dtype | None = None) -> StaticKVCache:
        """Zeroed K/V for max_len positions (capacity rounded up to a multiple of 16), pos = 0. Device/dtype
        default to the model's."""
        ref = self.lm_head.weight
        device, dtype = device or ref.device, dtype or ref.dtype
        cfg = self.cfg
        cap = -(-max_len // CAPACITY_MULTIPLE) * CAPACITY_MULTIPLE
        bshd = uses_bshd_cache(self.kernel)
        inner = (cap, cfg.n_heads, cfg.head_dim) if bshd else (cfg.n_heads, cap, cfg.head_dim)
        shape = (cfg.n_layers, batch_size, *inner)
        cos, sin = rotary_tables(cap, cfg.head_dim, cfg.rope_theta, device)
        return StaticKVCache(
            k=torch.zeros(shape, device=device, dtype=dtype), v=torch.zeros(shape, device=device, dtype=dtype),
            pos=torch.zeros(1, dtype=torch.long, device=device), slots=torch.arange(cap, device=device),
            cos=cos.to(dtype), sin_signed=signed_sin(sin).to(dtype), max_len=max_len, layout="bshd" if bshd else "bhsd")

    def prefill(self, input_ids: torch.Tensor, cache: StaticKVCache, last_only: bool = True) -> torch.Tensor:
        """Fill cache positions [0, T) in one causal pass (resets the cache) and set pos = T.
        Returns logits (B, 1, V) if last_only else (B, T, V)."""
        b, t = input_ids.shape
        if b != cache.batch_size or t > cache.max_len:
            raise ValueError(f"prefill of {b}x{t} ids into a cache for {cache.batch_size}x{cache.max_len}")

        def write(i, k_raw, k_rot, v):
            k_cache, v_cache = cache.layer(i)
            if cache.layout == "bshd":
                k_cache[:, :t].copy_(k_rot)
                v_cache[:, :t].copy_(v)
            else:
                k_cache[:, :, :t].copy_(k_rot.transpose(1, 2))
                v_cache[:, :, :t].copy_(v.transpose(1, 2))

        x = self._trunk(input_ids, write)
        cache.pos.fill_(t)
        if last_only:
            x = x[:, -1:]
        return self.lm_head(self.norm(x))

    def step(self, next_ids: torch.Tensor, cache: StaticKVCache) -> torch.Tensor:
        """Decode one token per sequence: ids (B,) or (B, 1) -> logits (B, 1, V). Writes K/V at slot cache.pos,
        attends over slots [0, pos], then pos += 1. Static shapes, no host sync, no allocation that depends on
        pos: capture it once in a CUDA graph and replay. The caller keeps pos < capacity (not checked: that
        would need a sync)."""
        b = cache.batch_size
        ids = next_ids.reshape(b, 1)
        cos = cache.cos.index_select(0, cache.pos).view(1, 1, 1, 1, -1)  # (1, 1, 1, 1, D), gathered on device
        sin = cache.sin_signed.index_select(0, cache.pos).view(1, 1, 1, 1, -1)
        mask = seqlens = None
        if self.kernel == "flash-attn":
            seqlens = cache.pos.to(torch.int32).expand(b).contiguous()  # tokens already cached
        elif self.kernel == "flash-attn-4":
            seqlens = (cache.pos + 1).to(torch.int32).expand(b).contiguous()  # keys to attend, new one included
        else:  # additive mask over the whole capacity, built once per step and shared by all layers
            dtype = cache.k.dtype
            mask = torch.where(cache.slots <= cache.pos, 0.0, float("-inf")).to(dtype).view(1, 1, 1, -1)
        x = self.tok_emb(ids)  # (B, 1, d)
        # residual adds are fused with the next LayerNorm (one launch each on CUDA): at batch 1 the step is
        # launch-bound enough for PyTorch's one-row LayerNorm to cost ~8% of it
        norms = [layer.ln1 for layer in self.layers] + [self.norm]
        x, h = add_layer_norm(x, None, norms[0])
        with sdpa_context(self.kernel):
            for i, layer in enumerate(self.layers):
                x, h = add_layer_norm(x, layer.attn.step(h, cache, i, cos, sin, mask, seqlens), layer.ln2)
                x, h = add_layer_norm(x, layer.fc2(F.gelu(layer.fc1(h))), norms[i + 1])
        cache.pos.add_(1)
        return self.lm_head(h)

    # ------------------------------------------------------------------------------------------ paper-like
    def prefill_cat(self, input_ids: torch.Tensor) -> CatKVCache:
        """Paper-like prefill: one causal pass with the chosen kernel, keeping un-rotated keys (B*H, T, D)."""
        b, t = input_ids.shape
        ks: list[torch.Tensor] = []
        vs: list[torch.Tensor] = []

        def keep(i, k_raw, k_rot, v):
            ks.append(k_raw.transpose(1, 2).reshape(b * self.cfg.n_heads, t, self.cfg.head_dim))
            vs.append(v.transpose(1, 2).reshape(b * self.cfg.n_heads, t, self.cfg.head_dim))

        self._trunk(input_ids, keep)
        return CatKVCache(ks, vs, b)

    def step_cat(self, next_ids: torch.Tensor, cache: CatKVCache) -> torch.Tensor:
        """Paper-like decode step: ids (B,) or (B, 1) -> logits (B, 1, V); grows `cache` by one position."""
        x = self.tok_emb(next_ids.reshape(cache.batch_size, 1))
        for i, layer in enumerate(self.layers):
            x = x + layer.attn.step_cat(layer.ln1(x), cache, i)
            x = x + layer.ffn(x)
        return self.lm_head(self.norm(x))
