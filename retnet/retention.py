"""Multi-scale retention math: decay schedules, theta_shift rotation, parallel and chunkwise forms.

All forms compute the same function (paper Eq. 5-8 with the normalisations of Sec. 2.2 / torchscale 0.3.0).
For query position n (absolute, 0-based), head with decay gamma:

    U_n = sum_{m <= n} gamma^(n-m) (q_n . k_m) v_m           unnormalised retention       (dv,)
    u_n = sum_{m <= n} gamma^(n-m) (q_n . k_m)               its row sum                  ()
    c_n = sum_{j=0..n} gamma^j                               decay-mask row sum
    o_n = U_n / max(|u_n|, sqrt(c_n))

which is torchscale's `D / sqrt(rowsum D)` followed by `R / max(|rowsum R|, 1)` with the sqrt(c_n) folded
into one denominator. As in torchscale the denominator is treated as a constant for autograd (detached).
q and k arrive already rotated (theta_shift) and k already scaled by dk^-0.5.

The recurrent form keeps, per head, S_n = gamma S_{n-1} + k_n^T v_n (dk, dv) and z_n = gamma z_{n-1} + k_n (dk,),
so o_n = (q_n S_n) / max(|q_n . z_n|, sqrt(c_n)); see `retnet.kernels.recurrent_step`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def log_decay(n_heads: int, schedule: str) -> Tensor:
    """log(gamma) per head, float64 (H,).

    paper:      gamma = 1 - exp(linspace(log 1/32, log 1/512, H))
    torchscale: gamma = 1 - 2^(-5 - h)   (RetNetRelPos.decay)
    """
    if schedule == "paper":
        one_minus_gamma = torch.exp(torch.linspace(math.log(1 / 32), math.log(1 / 512), n_heads, dtype=torch.float64))
    elif schedule == "torchscale":
        one_minus_gamma = 2.0 ** (-5.0 - torch.arange(n_heads, dtype=torch.float64))
    else:
        raise ValueError(f"unknown decay schedule {schedule!r}")
    return torch.log1p(-one_minus_gamma)


def rotary_angle(qk_head_dim: int, base: float = 10000.0) -> Tensor:
    """theta_shift angle per rotated pair, float64 (dk/2,): 1 / base ** linspace(0, 1, dk/2) (torchscale)."""
    return 1.0 / base ** torch.linspace(0, 1, qk_head_dim // 2, dtype=torch.float64)


def position_tables(positions: Tensor, angle: Tensor, log_gamma: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """cos, sin (T, dk/2) and row_norm = sqrt(c_n) (H, T) for absolute positions (T,) (any int device tensor).

    Computed in float64 and cast: fp32 sin(pos * angle) loses ~1e-3 rad at pos ~ 3e4.
    """
    pos = positions.to(torch.float64)
    theta = pos[:, None] * angle.to(pos.device)[None, :]  # (T, dk/2)
    lam = log_gamma.to(pos.device)[:, None]  # (H, 1)
    # c_n = (1 - gamma^(n+1)) / (1 - gamma), written with expm1 to stay exact for gamma close to 1
    row_sum = torch.expm1((pos[None, :] + 1) * lam) / torch.expm1(lam)  # (H, T)
    return theta.cos().to(dtype), theta.sin().to(dtype), row_sum.sqrt().to(dtype)


def theta_shift(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate interleaved pairs (x[2i], x[2i+1]) by angle i: x (..., dk), cos/sin broadcastable to (..., dk/2)."""
    pairs = x.unflatten(-1, (-1, 2))
    x_even, x_odd = pairs[..., 0], pairs[..., 1]
    return torch.stack((x_even * cos - x_odd * sin, x_odd * cos + x_even * sin), dim=-1).flatten(-2)


def _causal_decay(length: int, log_gamma: Tensor, dtype: torch.dtype) -> Tensor:
    """gamma^(i-j) for j <= i else 0, (H, length, length); float64 then cast."""
    idx = torch.arange(length, dtype=torch.float64, device=log_gamma.device)
    diff = idx[:, None] - idx[None, :]
    decay = torch.exp(diff.clamp(min=0) * log_gamma.to(torch.float64)[:, None, None])
    return torch.where(diff >= 0, decay, torch.zeros((), dtype=torch.float64, device=decay.device)).to(dtype)


def parallel_retention(q: Tensor, k: Tensor, v: Tensor, log_gamma: Tensor, row_norm: Tensor) -> Tensor:
    """Parallel form (starts at position 0). q, k (B, H, T, dk), v (B, H, T, dv), row_norm (H, T) -> (B, H, T, dv)."""
    decay = _causal_decay(q.shape[-2], log_gamma, q.dtype)  # (H, T, T)
    scores = (q @ k.transpose(-1, -2)) * decay  # (B, H, T, T)
    numer = scores @ v  # (B, H, T, dv)
    denom = scores.detach().sum(-1).abs().maximum(row_norm)  # (B, H, T)
    return numer / denom.unsqueeze(-1)


def chunkwise_retention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_gamma: Tensor,
    row_norm: Tensor | None,
    kv: Tensor | None = None,
    k_sum: Tensor | None = None,
    chunk_size: int = 512,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Chunkwise form, optionally continuing from a recurrent state.

    q, k (B, H, T, dk); v (B, H, T, dv); row_norm (H, T) for the T absolute positions;
    kv (B, H, dk, dv) and k_sum (B, H, dk): state after the previous token (None -> zeros).
    Returns o (B, H, T, dv) and the state after the last token (kv, k_sum); the inputs are not modified.
    Any T works: a leading chunk of T % chunk_size tokens, then full chunks (chunk_size 1 and > T included).
    row_norm=None gives the UNNORMALISED retention U_n (the fused kernels' output, see retnet.kernels.chunk):
    no row sums are computed and k_sum is neither read nor returned (None).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    B, H, T, dk = q.shape
    dv = v.shape[-1]
    if kv is None:
        kv = q.new_zeros(B, H, dk, dv)
    normalise = row_norm is not None
    if k_sum is None and normalise:
        k_sum = q.new_zeros(B, H, dk)
    kv = kv.to(q.dtype)
    k_sum = k_sum.to(q.dtype) if normalise else None
    head = T % chunk_size
    pieces = ([(0, head, head)] if head else []) + ([(head, T, chunk_size)] if T > head else [])
    outputs = []
    for start, stop, size in pieces:
        o, kv, k_sum = _scan_chunks(
            q[:, :, start:stop], k[:, :, start:stop], v[:, :, start:stop],
            log_gamma, row_norm[:, start:stop] if normalise else None, kv, k_sum, size,
        )
        outputs.append(o)
    return torch.cat(outputs, dim=2), kv, k_sum


def _scan_chunks(
    q: Tensor, k: Tensor, v: Tensor, log_gamma: Tensor, row_norm: Tensor | None, kv: Tensor, k_sum: Tensor | None,
    chunk: int,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """T = N * chunk tokens: intra-chunk terms for all chunks at once, then a scan over chunks for the state.
    row_norm None: unnormalised (no row sums, k_sum stays None)."""
    B, H, T, dk = q.shape
    n_chunks = T // chunk
    q, k, v = (t.unflatten(2, (n_chunks, chunk)) for t in (q, k, v))  # (B, H, N, C, d)
    lam = log_gamma.to(torch.float64)
    idx = torch.arange(chunk, dtype=torch.float64, device=lam.device)
    query_decay = torch.exp((idx + 1) * lam[:, None]).to(q.dtype)[:, None, :, None]  # (H, 1, C, 1): state -> row i
    key_decay = torch.exp((chunk - 1 - idx) * lam[:, None]).to(q.dtype)[:, None, :, None]  # (H, 1, C, 1): row j -> end
    chunk_decay = torch.exp(chunk * lam).to(q.dtype)  # (H,)

    scores = (q @ k.transpose(-1, -2)) * _causal_decay(chunk, log_gamma, q.dtype)[:, None]  # (B, H, N, C, C)
    numer = scores @ v  # (B, H, N, C, dv)
    normalise = row_norm is not None

    k_decayed = k * key_decay  # (B, H, N, C, dk)
    kv_chunks = k_decayed.transpose(-1, -2) @ v  # (B, H, N, dk, dv)
    q_decayed = q * query_decay  # (B, H, N, C, dk)

    cross = []
    for n in range(n_chunks):  # the only sequential part: N small matmuls against the running state
        cross.append(q_decayed[:, :, n] @ kv)  # (B, H, C, dv)
        kv = kv * chunk_decay[:, None, None] + kv_chunks[:, :, n]
    numer = numer + torch.stack(cross, dim=2)
    if not normalise:
        return numer.flatten(2, 3), kv, None

    denom = scores.detach().sum(-1)  # (B, H, N, C)
    k_sum_chunks = k_decayed.detach().sum(-2)  # (B, H, N, dk)
    cross_denom = []
    for n in range(n_chunks):
        cross_denom.append(q_decayed[:, :, n].detach() @ k_sum.unsqueeze(-1))  # (B, H, C, 1)
        k_sum = k_sum * chunk_decay[:, None] + k_sum_chunks[:, :, n]
    denom = (denom + torch.stack(cross_denom, dim=2).squeeze(-1)).abs().maximum(row_norm.unflatten(1, (n_chunks, chunk)))
    o = numer / denom.unsqueeze(-1)  # (B, H, N, C, dv)
    return o.flatten(2, 3), kv, k_sum
