"""Decoder-only Transformer matched to the RetNet presets, with three ways to decode.

Architecture (pre-LN, as torchscale's decoder): token embedding -> n_layers x [LayerNorm -> causal attention with
rotary -> residual, LayerNorm -> Linear(d, f) -> GELU -> Linear(f, d) -> residual] -> LayerNorm -> untied head.
No biases, so each layer has 12 d^2 matrix parameters (+ 4d LayerNorm), like a RetNet layer. Attention is MHA by
default (f = 4d); with cfg.n_kv_heads < n_heads it is grouped-query (GQA / MQA): the fused QKV projection is
d -> d + 2 kv_dim, caches hold n_kv_heads heads, f = 5d - kv_dim keeps the 12 d^2 (see config.py).

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

from retnet.kernels.add_norm import add_norm
from retnet.kernels.rotation import rotate
from retnet.kernels.skinny_linear import check_decode_gemm, project, resolve_decode_gemm

from .cache import CAPACITY_MULTIPLE, CatKVCache, StaticKVCache
from .config import TransformerConfig
from .kernels import (causal_attention, check_kernel, decode_attention_flash_attn, decode_attention_flash_attn_4,
                      decode_attention_sdpa, gqa_support, sdpa_context, uses_bshd_cache)
from .rotary import apply_rotary, apply_rotary_rolled, rotary_tables, signed_sin


class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig, kernel: str, **factory):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim, self.kernel = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, kernel
        self.rope_theta = cfg.rope_theta
        # fused: one GEMM per step; output columns are [q heads | k heads | v heads], each head_dim wide (for MHA
        # the same layout as a (3, H, D) split, so MHA weights and results are unchanged)
        self.wqkv = nn.Linear(cfg.d_model, cfg.d_model + 2 * cfg.kv_dim, bias=False, **factory)
        self.wo = nn.Linear(cfg.d_model, cfg.d_model, bias=False, **factory)

    def _heads(self, x: torch.Tensor, gemm: str = "torch") -> torch.Tensor:
        """Projected q|k|v as one (B, T, H + 2 Hkv, D) tensor."""
        b, t, _ = x.shape
        return project(x, self.wqkv, gemm).view(b, t, self.n_heads + 2 * self.n_kv_heads, self.head_dim)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q (B, T, H, D), k and v (B, T, Hkv, D)."""
        h, hkv = self.n_heads, self.n_kv_heads
        return self._heads(x).split((h, hkv, hkv), dim=2)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """Causal attention over x (B, T, d). cos/sin (T, D). Returns (y (B, T, d), k_raw, k_rot, v) with the
        keys/values as (B, T, Hkv, D) so a caller can fill a cache from them."""
        b, t, _ = x.shape
        q, k_raw, v = self._qkv(x)
        half = self.head_dim // 2  # the tables repeat their angles over the two halves: the kernel takes one half
        cos, sin = cos[:, :half], sin[:, :half]  # (T, D/2)
        # one fused launch per tensor on a GPU (as RetNet's rotation: both sides of a comparison fused alike)
        q, k = rotate(q, cos, sin, interleaved=False), rotate(k_raw, cos, sin, interleaved=False)
        if torch.is_grad_enabled():  # training: a kernel that saved the view v would keep the whole q|k|v projection
            v = v.contiguous()       # output alive until backward (q and k are new tensors from the rotation)
        y = causal_attention(q, k, v, self.kernel)  # (B, T, H, D)
        return self.wo(y.reshape(b, t, -1)), k_raw, k, v  # H * D = d unless the heads are sharded (tensor parallel)

    def step(self, x: torch.Tensor, cache: StaticKVCache, i: int, cos: torch.Tensor, sin_signed: torch.Tensor,
             mask: torch.Tensor | None, seqlens: torch.Tensor | None, gemm: str = "torch") -> torch.Tensor:
        """One token per sequence. x (B, 1, d); cos/sin_signed (1, 1, 1, D) for position cache.pos; gemm: the
        projections' kernel (`retnet.kernels.skinny_linear.project`)."""
        b, _, d = x.shape
        h, hkv = self.n_heads, self.n_kv_heads
        qkv = self._heads(x, gemm)  # (B, 1, H + 2 Hkv, D)
        qk = apply_rotary_rolled(qkv[:, :, :h + hkv], cos, sin_signed)  # q and k rotated together
        q, k, v = qk[:, :, :h], qk[:, :, h:], qkv[:, :, h + hkv:]  # (B, 1, H, D), 2 x (B, 1, Hkv, D)
        k_cache, v_cache = cache.layer(i)
        if self.kernel == "flash-attn":
            y = decode_attention_flash_attn(q, k_cache, v_cache, k, v, seqlens)  # writes K/V itself
        elif self.kernel == "flash-attn-4":
            k_cache.index_copy_(1, cache.pos, k)  # (B, S, Hkv, D) at slot pos
            v_cache.index_copy_(1, cache.pos, v)
            y = decode_attention_flash_attn_4(q, k_cache, v_cache, seqlens)
        else:
            k_cache.index_copy_(2, cache.pos, k.transpose(1, 2))  # (B, Hkv, S, D) at slot pos
            v_cache.index_copy_(2, cache.pos, v.transpose(1, 2))
            y = decode_attention_sdpa(q.transpose(1, 2), k_cache, v_cache, mask, self.kernel).transpose(1, 2)
        return project(y.reshape(b, 1, d), self.wo, gemm)

    def step_cat(self, x: torch.Tensor, cache: CatKVCache, i: int) -> torch.Tensor:
        """torchscale-style incremental step: x (B, 1, d). With GQA the cache holds B*Hkv rows and each K/V row
        serves its group of G = H / Hkv query heads as G query rows of one bmm (no K/V copy; G = 1 is MHA)."""
        b, _, d = x.shape
        hkv, g, hd = self.n_kv_heads, self.n_heads // self.n_kv_heads, self.head_dim
        q, k, v = self._qkv(x)
        q = q.reshape(b * hkv, g, hd)  # (B, 1, H, D) -> (B*Hkv, G, D): query head h = kv head h // G, member h % G
        k, v = (t.transpose(1, 2).reshape(b * hkv, 1, hd) for t in (k, v))  # (B*Hkv, 1, D)
        cache.k[i] = torch.cat([cache.k[i], k], dim=1)  # (B*Hkv, S, D): a new allocation every step
        cache.v[i] = torch.cat([cache.v[i], v], dim=1)
        s = cache.k[i].shape[1]
        # tables for all S positions recomputed every call and the whole key re-rotated, as XPOS.forward did
        cos, sin = rotary_tables(s, hd, self.rope_theta, device=x.device)
        k_rot = apply_rotary(cache.k[i], cos, sin)
        q = apply_rotary(q, cos[-1:], sin[-1:]) * hd ** -0.5
        w = torch.bmm(q, k_rot.transpose(1, 2))  # (B*Hkv, G, S)
        # torchscale: softmax in float32, cast back (float64 stays float64 so CPU tests can check to 1e-12)
        w = F.softmax(w, dim=-1, dtype=torch.promote_types(w.dtype, torch.float32)).type_as(w)
        y = torch.bmm(w, cache.v[i])  # (B*Hkv, G, D), rows in query-head order
        return self.wo(y.reshape(b, 1, d))


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
                 dtype: torch.dtype | None = None, decode_gemm: str = "auto"):
        super().__init__()
        self.cfg, self.kernel = cfg, check_kernel(kernel)
        self.decode_gemm = decode_gemm  # the static step's projections, as RetNet's step (see the property)
        factory = dict(device=device, dtype=dtype)
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model, **factory)
        self.layers = nn.ModuleList(Block(cfg, kernel, **factory) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, **factory)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False, **factory)

    @property
    def decode_gemm(self) -> str:
        """Resolved kernel of the static step's projections ("torch" | "triton"): "auto" -> "triton" on CUDA with
        bf16/fp16 weights when triton imports (`retnet.kernels.skinny_linear`), as for RetNet's step."""
        return resolve_decode_gemm(self._decode_gemm, self.lm_head.weight.device, self.lm_head.weight.dtype)

    @decode_gemm.setter
    def decode_gemm(self, name: str) -> None:
        self._decode_gemm = check_decode_gemm(name)

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
        """Zeroed K/V (n_kv_heads heads) for max_len positions (capacity rounded up to a multiple of 16), pos = 0.
        Device/dtype default to the model's."""
        ref = self.lm_head.weight
        device, dtype = device or ref.device, dtype or ref.dtype
        cfg = self.cfg
        cap = -(-max_len // CAPACITY_MULTIPLE) * CAPACITY_MULTIPLE
        bshd = uses_bshd_cache(self.kernel)
        inner = (cap, cfg.n_kv_heads, cfg.head_dim) if bshd else (cfg.n_kv_heads, cap, cfg.head_dim)
        shape = (cfg.n_layers, batch_size, *inner)  # (L, B, Hkv, S, D) or (L, B, S, Hkv, D)
        if cfg.n_kv_heads != cfg.n_heads:  # decide enable_gqa vs repeat_interleave now, not inside a graph capture
            gqa_support(self.kernel, device, dtype, "decode", cfg.head_dim)
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
        cos = cache.cos.index_select(0, cache.pos).view(1, 1, 1, -1)  # (1, 1, 1, D), gathered on device
        sin = cache.sin_signed.index_select(0, cache.pos).view(1, 1, 1, -1)
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
        x, h = add_norm(x, None, norms[0])
        gemm = self.decode_gemm
        with sdpa_context(self.kernel):
            for i, layer in enumerate(self.layers):
                x, h = add_norm(x, layer.attn.step(h, cache, i, cos, sin, mask, seqlens, gemm), layer.ln2)
                x, h = add_norm(x, project(F.gelu(project(h, layer.fc1, gemm)), layer.fc2, gemm), norms[i + 1])
        cache.pos.add_(1)
        return project(h, self.lm_head, gemm)

    # ------------------------------------------------------------------------------------------ paper-like
    def prefill_cat(self, input_ids: torch.Tensor) -> CatKVCache:
        """Paper-like prefill: one causal pass with the chosen kernel, keeping un-rotated keys (B*Hkv, T, D)."""
        b, t = input_ids.shape
        rows, hd = b * self.cfg.n_kv_heads, self.cfg.head_dim
        ks: list[torch.Tensor] = []
        vs: list[torch.Tensor] = []

        def keep(i, k_raw, k_rot, v):
            ks.append(k_raw.transpose(1, 2).reshape(rows, t, hd))
            vs.append(v.transpose(1, 2).reshape(rows, t, hd))

        self._trunk(input_ids, keep)
        return CatKVCache(ks, vs, b)

    def step_cat(self, next_ids: torch.Tensor, cache: CatKVCache) -> torch.Tensor:
        """Paper-like decode step: ids (B,) or (B, 1) -> logits (B, 1, V); grows `cache` by one position."""
        x = self.tok_emb(next_ids.reshape(cache.batch_size, 1))
        for i, layer in enumerate(self.layers):
            x = x + layer.attn.step_cat(layer.ln1(x), cache, i)
            x = x + layer.ffn(x)
        return self.lm_head(self.norm(x))
