"""RetNet decoder (arXiv 2307.08621): three computation forms, chunkwise prefill, graph-capturable recurrent step."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from retnet.config import RetNetConfig
from retnet.kernels import recurrent_step, triton_available
from retnet.kernels.add_norm import add_norm
from retnet.kernels.fused_step import MODEL_STEP_KERNELS, retention_step
from retnet.kernels.gate import norm_gate
from retnet.kernels.rotation import rotate
from retnet.kernels.skinny_linear import check_decode_gemm, project, resolve_decode_gemm
from retnet.kernels.chunk import CHUNK_KERNELS, auto_chunk_kernel, chunk_retention, key_sum
from retnet.kernels.chunk_graphs import RetentionGraphs
from retnet.retention import chunkwise_retention, log_decay, parallel_retention, position_tables, rotary_angle, theta_shift

MODES = ("parallel", "chunkwise", "recurrent")
# Prefill runs a long prompt in segments of this many tokens, carrying the recurrent state, so its working set
# (projections, fp32 rotated q/k, FFN activations: ~100-200 KiB per token and layer at 6.7B) is bounded by the
# segment, not the prompt: ~1.5 GiB per sequence at 6.7B. 8192 tokens (the paper's training length) keep the
# fused kernel at full occupancy and make the per-segment fixed costs (tables, launches) negligible.
PREFILL_SEGMENT = 8192
_TRITON_STATE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@dataclass
class RetNetState:
    """Preallocated recurrent state of every layer, updated in place by `RetNet.step` / `RetNet.prefill`."""

    kv: Tensor  # (L, B, H, dk, dv) decayed sum of k^T v
    k_sum: Tensor  # (L, B, H, dk) decayed sum of k (for the row-sum normaliser)
    k_sum_next: Tensor  # (L, B, H, dk) scratch of the "triton-statepass" step only (new k_sum, then one copy)
    pos: Tensor  # () int64 on the device: number of tokens consumed (the next token's position)

    @property
    def batch_size(self) -> int:
        return self.kv.shape[1]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors())

    def tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.kv, self.k_sum, self.k_sum_next, self.pos

    def clone(self) -> RetNetState:
        return RetNetState(*(t.clone() for t in self.tensors()))

    def copy_(self, other: RetNetState) -> RetNetState:
        """Overwrite in place (keeps the storage a captured CUDA graph points at)."""
        for dst, src in zip(self.tensors(), other.tensors()):
            dst.copy_(src)
        return self

    def zero_(self) -> RetNetState:
        for t in self.tensors():
            t.zero_()
        return self


class RetentionTables(NamedTuple):
    cos: Tensor  # (T, dk/2) or (dk/2,) for a step
    sin: Tensor
    log_decay: Tensor  # (H,)
    row_norm: Tensor  # (H, T) or (H,) for a step: sqrt of the decay-mask row sum at each position


def make_norm(kind: str, dim: int, eps: float) -> nn.Module:
    return nn.LayerNorm(dim, eps=eps) if kind == "layernorm" else nn.RMSNorm(dim, eps=eps)


class MultiScaleRetention(nn.Module):
    def __init__(self, cfg: RetNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_heads, self.dk, self.dv = cfg.n_heads, cfg.qk_head_dim, cfg.v_head_dim
        self.k_scale = self.dk**-0.5
        # q, k, v, g in one matmul; rows ordered [q (d) | k (d) | v (value_dim) | g (value_dim)]
        self.qkvg = nn.Linear(cfg.d_model, 2 * cfg.d_model + 2 * cfg.value_dim, bias=cfg.bias)
        self.out_proj = nn.Linear(cfg.value_dim, cfg.d_model, bias=cfg.bias)
        # the heads this module computes: all of them, or under tensor parallelism one rank's contiguous share
        # (suites/training/tensor_parallel.py sets n_heads and heads; the projections then hold those heads only)
        self.heads = slice(None)

    def _split(self, x: Tensor, gemm: str = "torch") -> tuple[Tensor, Tensor, Tensor, Tensor]:
        qk, v = self.n_heads * self.dk, self.n_heads * self.dv  # (d, value_dim) unless the heads are sharded
        return project(x, self.qkvg, gemm).split([qk, qk, v, v], dim=-1)

    def _local(self, tables: RetentionTables) -> RetentionTables:
        """The per-head tables (decay, row norm) of this module's heads."""
        if self.heads == slice(None):
            return tables
        return tables._replace(log_decay=tables.log_decay[self.heads], row_norm=tables.row_norm[self.heads])

    def _gate_and_project(self, o: Tensor, g: Tensor, fused: bool | None = None, gemm: str = "torch") -> Tensor:
        """o (..., H, dv) retention output (fp32/64, or the fused kernel's half precision), g (..., value_dim) -> (..., d).
        Head norm and swish gate are one fused launch on a GPU (retnet.kernels.gate) unless fused=False."""
        gated = norm_gate(o, g, self.cfg.eps, self.cfg.head_norm == "rmsnorm", fused)
        return project(gated, self.out_proj, gemm)  # (..., d)

    def forward(
        self, x: Tensor, tables: RetentionTables, mode: str, chunk_size: int, state: tuple[Tensor, Tensor] | None = None,
        kernel: str = "torch", graphs: tuple[RetentionGraphs, int] | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        """x (B, T, d) -> (B, T, d), and the state after the last token for the chunkwise form.
        kernel: chunkwise kernel ("torch": the normalised reference form; else a fused kernel, see _forward_fused);
        graphs: the model's graphed retention and this layer's index (kernel "fla-graphs")."""
        tables = self._local(tables)
        if mode == "chunkwise" and kernel != "torch":
            return self._forward_fused(x, tables, kernel, chunk_size, state, graphs)
        B, T, _ = x.shape
        H, dt = self.n_heads, tables.cos.dtype
        q, k, v, g = self._split(x)
        q = theta_shift(q.view(B, T, H, self.dk).transpose(1, 2).to(dt), tables.cos, tables.sin)  # (B, H, T, dk)
        k = theta_shift(k.view(B, T, H, self.dk).transpose(1, 2).to(dt), tables.cos, tables.sin) * self.k_scale
        v = v.view(B, T, H, self.dv).transpose(1, 2).to(dt)  # (B, H, T, dv)
        if mode == "parallel":
            o, new_state = parallel_retention(q, k, v, tables.log_decay, tables.row_norm), None
        else:
            kv, k_sum = state if state is not None else (None, None)
            o, kv, k_sum = chunkwise_retention(q, k, v, tables.log_decay, tables.row_norm, kv, k_sum, chunk_size)
            new_state = (kv, k_sum)
        return self._gate_and_project(o.transpose(1, 2), g), new_state  # o: (B, T, H, dv)

    def _forward_fused(
        self, x: Tensor, tables: RetentionTables, kernel: str, chunk_size: int, state: tuple[Tensor, Tensor] | None,
        graphs: tuple[RetentionGraphs, int] | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        """Chunkwise form through `chunk_retention(kernel=...)`, in [B, T, H, d] end to end (no transposes).

        No row-sum normaliser: it is a positive scale per (token, head) and the head norm that follows removes it
        (up to the norm's eps), so the kernel's unnormalised output feeds the norm directly. With a state, the
        decayed key sum the decode step's normaliser needs is computed separately (`key_sum`, fp32 keys).
        """
        B, T, _ = x.shape
        H, dt = self.n_heads, tables.cos.dtype
        q, k, v, g = self._split(x)
        kernel_dtype = v.dtype  # the weights' dtype (bf16 on GPU): the fused kernels take half-precision inputs
        # one fused launch per tensor on a GPU (rotation in fp32 registers, nothing saved for backward)
        q = rotate(q.view(B, T, H, self.dk), tables.cos, tables.sin, out_dtype=kernel_dtype)  # (B, T, H, dk)
        kv0, k_sum0 = state if state is not None else (None, None)
        if state is None:  # training: keys straight to the kernel's dtype, dk^-0.5 folded in
            k = rotate(k.view(B, T, H, self.dk), tables.cos, tables.sin, scale=self.k_scale, out_dtype=kernel_dtype)
            k_sum = None
        else:  # prefill: the decode step's normaliser needs the decayed key sum from fp32 keys
            k = rotate(k.view(B, T, H, self.dk), tables.cos, tables.sin, scale=self.k_scale, out_dtype=dt)
            k_sum = key_sum(k, tables.log_decay, k_sum0)  # (B, H, dk)
            k = k.to(kernel_dtype)  # the fp32 keys are freed before the kernel runs
        v = v.view(B, T, H, self.dv)
        if graphs is not None and state is None and RetentionGraphs.usable(q, k, v):  # a training step's call
            o, kv = graphs[0](graphs[1], q, k, v, tables.log_decay), None  # (B, T, H, dv)
        else:
            o, kv = chunk_retention(
                q, k, v, tables.log_decay, kernel=kernel,
                chunk_size=chunk_size, initial_state=kv0, output_final_state=state is not None,
            )  # o (B, T, H, dv), kv (B, H, dk, dv) fp32
        return self._gate_and_project(o, g), ((kv, k_sum) if state is not None else None)

    def step(
        self, x: Tensor, tables: RetentionTables, kv: Tensor, k_sum: Tensor, k_sum_next: Tensor, kernel: str,
        gemm: str = "torch",
    ) -> Tensor:
        """x (B, d) one normed token -> (B, d); kv (B, H, dk, dv) and k_sum (B, H, dk) updated in place.
        kernel "torch" | "triton": `retention_step` (state pass + key sum + head norm + gate; "triton" = two
        launches); "triton-statepass": the Triton state pass writes the new k_sum to k_sum_next (the model copies
        it back after the last layer) and the head norm and gate run in torch (the pre-issue-#16 path).
        gemm: the projections' kernel (`retnet.kernels.skinny_linear.project`)."""
        B = x.shape[0]
        q, k, v, g = self._split(x, gemm)  # views of one projection output, no copies
        q, k = q.view(B, self.n_heads, self.dk), k.view(B, self.n_heads, self.dk)
        v = v.view(B, self.n_heads, self.dv)
        cos, sin, lam, row_norm = tables
        if kernel == "triton-statepass":
            o = recurrent_step("triton", q, k, v, kv, k_sum, k_sum_next, cos, sin, lam, row_norm, self.k_scale)
            return self._gate_and_project(o, g, fused=False, gemm=gemm)  # o: (B, H, dv); norm and gate in torch
        gated = retention_step(
            kernel, q, k, v, g, kv, k_sum, cos, sin, lam, row_norm, self.k_scale, self.cfg.head_norm, self.cfg.eps
        )  # (B, value_dim) in the weights' dtype
        return project(gated, self.out_proj, gemm)


class FeedForward(nn.Module):
    def __init__(self, cfg: RetNetConfig) -> None:
        super().__init__()
        self.glu = cfg.ffn == "glu"
        self.act = F.gelu if cfg.ffn_activation == "gelu" else F.silu
        # GLU: [fc1 | gate] fused into one matmul
        self.fc_in = nn.Linear(cfg.d_model, cfg.ffn_dim * (2 if self.glu else 1), bias=cfg.bias)
        self.fc_out = nn.Linear(cfg.ffn_dim, cfg.d_model, bias=cfg.bias)

    def forward(self, x: Tensor, gemm: str = "torch") -> Tensor:
        """gemm "triton" only from the decode step (`project`: the kernel has no backward)."""
        h = project(x, self.fc_in, gemm)
        if self.glu:
            h, gate = h.chunk(2, dim=-1)
            h = self.act(h) * gate
        else:
            h = self.act(h)
        return project(h, self.fc_out, gemm)


class RetNetBlock(nn.Module):
    def __init__(self, cfg: RetNetConfig) -> None:
        super().__init__()
        self.retention_norm = make_norm(cfg.norm, cfg.d_model, cfg.eps)
        self.retention = MultiScaleRetention(cfg)
        self.ffn_norm = make_norm(cfg.norm, cfg.d_model, cfg.eps)
        self.ffn = FeedForward(cfg)

    def forward(self, x: Tensor, tables: RetentionTables, mode: str, chunk_size: int, state=None, kernel: str = "torch",
                graphs: tuple[RetentionGraphs, int] | None = None):
        h, new_state = self.retention(self.retention_norm(x), tables, mode, chunk_size, state, kernel, graphs)
        x = x + h
        return x + self.ffn(self.ffn_norm(x)), new_state

    def step(
        self, x: Tensor, h: Tensor, next_norm: nn.Module, tables: RetentionTables,
        kv: Tensor, k_sum: Tensor, k_sum_next: Tensor, kernel: str, gemm: str = "torch",
    ) -> tuple[Tensor, Tensor]:
        """x (B, d) residual stream, h = retention_norm(x) -> (x', next_norm(x')) for the next block (or the final
        norm). Each residual add is fused with the norm after it (one launch) when kernel == "triton"."""
        fused = kernel == "triton"
        x, h = add_norm(x, self.retention.step(h, tables, kv, k_sum, k_sum_next, kernel, gemm), self.ffn_norm, fused)
        return add_norm(x, self.ffn(h, gemm), next_norm, fused)


class RetNet(nn.Module):
    """RetNet decoder-only LM. `forward(ids, mode)` -> logits (B, T, V); `prefill` + `step` for decoding."""

    def __init__(self, cfg: RetNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.embed_norm = make_norm(cfg.norm, cfg.d_model, cfg.eps) if cfg.embed_norm else None
        self.layers = nn.ModuleList(RetNetBlock(cfg) for _ in range(cfg.n_layers))
        self.norm = make_norm(cfg.norm, cfg.d_model, cfg.eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.step_kernel = cfg.step_kernel
        self.chunk_kernel = cfg.chunk_kernel
        self.decode_gemm = cfg.decode_gemm
        # decay / rotation constants in float64 per device; kept out of the buffers so that `.to(bfloat16)`
        # cannot round gamma = 1 - 1/512 to 1 and meta construction needs no data
        self._constants: dict[torch.device, tuple[Tensor, Tensor]] = {}
        # kernel "fla-graphs": every layer's retention graphs, captured at the first training forward of a shape
        self._retention_graphs: RetentionGraphs | None = None
        self.reset_parameters()

    # ---- parameters and constants -------------------------------------------------------------------------
    def reset_parameters(self) -> None:
        """Small random init (std init_std; output projections scaled by 1/sqrt(2L), GPT-2 style)."""
        std = self.cfg.init_std
        self._constants.clear()
        if self.embed.weight.is_meta:  # nothing to initialise (and normal_ on meta would import torch._dynamo)
            return
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                scaled = name.endswith(("out_proj", "fc_out"))
                nn.init.normal_(module.weight, std=std / math.sqrt(2 * self.cfg.n_layers) if scaled else std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=std)
            elif isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
                module.reset_parameters()

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    def constants(self, device: torch.device | None = None) -> tuple[Tensor, Tensor]:
        """(log_decay (H,), rotary angle (dk/2,)) in float64 on `device`, cached (warm it before graph capture)."""
        device = torch.device(device or self.device)
        if device.type == "cuda" and device.index is None:  # one cache key per GPU: no miss inside a capture
            device = torch.device("cuda", torch.cuda.current_device())
        if device not in self._constants:
            lam = log_decay(self.cfg.n_heads, self.cfg.decay)
            angle = rotary_angle(self.cfg.qk_head_dim, self.cfg.rotary_base)
            self._constants[device] = (lam.to(device), angle.to(device))
        return self._constants[device]

    def _tables(self, positions: Tensor, dtype: torch.dtype) -> RetentionTables:
        lam, angle = self.constants(positions.device)
        cos, sin, row_norm = position_tables(positions, angle, lam, dtype)
        return RetentionTables(cos, sin, lam.to(dtype), row_norm)

    @property
    def step_kernel(self) -> str:
        """Resolved decode-step kernel name ("torch" | "triton" | "triton-statepass"), recorded by the runner."""
        if self._step_kernel != "auto":
            return self._step_kernel
        use_triton = (
            self.device.type == "cuda" and triton_available() and self.cfg.state_dtype in _TRITON_STATE_DTYPES
            and self.embed.weight.dtype != torch.float64
        )
        return "triton" if use_triton else "torch"

    @step_kernel.setter
    def step_kernel(self, name: str) -> None:
        if name not in ("auto", *MODEL_STEP_KERNELS):
            raise ValueError(f"step_kernel={name!r}; expected 'auto' or one of {MODEL_STEP_KERNELS}")
        self._step_kernel = name

    @property
    def decode_gemm(self) -> str:
        """Resolved kernel of the decode step's projections ("torch" | "triton"), recorded by the runner."""
        return resolve_decode_gemm(self._decode_gemm, self.device, self.embed.weight.dtype)

    @decode_gemm.setter
    def decode_gemm(self, name: str) -> None:
        self._decode_gemm = check_decode_gemm(name)

    @property
    def chunk_kernel(self) -> str:
        """Resolved chunkwise kernel of the parallel side ("torch" | "fla" | "fla-graphs"): training, chunkwise
        forward, prefill."""
        if self._chunk_kernel != "auto":
            return self._chunk_kernel
        return auto_chunk_kernel(self.device, self.embed.weight.dtype, self.cfg.head_dims)

    @chunk_kernel.setter
    def chunk_kernel(self, name: str) -> None:
        if name not in ("auto", *CHUNK_KERNELS):
            raise ValueError(f"chunk_kernel={name!r}; expected 'auto' or one of {CHUNK_KERNELS}")
        self._chunk_kernel = name

    # ---- forward forms ------------------------------------------------------------------------------------
    def _check_ids(self, input_ids: Tensor) -> None:
        if input_ids.dim() != 2 or input_ids.dtype not in (torch.long, torch.int32):
            raise ValueError(f"input_ids must be (B, T) integer, got {tuple(input_ids.shape)} {input_ids.dtype}")
        if not 1 <= input_ids.shape[1] <= self.cfg.max_seq_len:
            raise ValueError(f"sequence length {input_ids.shape[1]} outside [1, max_seq_len={self.cfg.max_seq_len}]")

    def _embed(self, input_ids: Tensor) -> Tensor:
        x = self.embed(input_ids)
        if self.cfg.embed_scale != 1.0:
            x = x * self.cfg.embed_scale
        return self.embed_norm(x) if self.embed_norm is not None else x

    def _compute_dtype(self) -> torch.dtype:
        # retention math of the parallel/chunkwise forms runs in fp32 for half-precision weights
        return torch.promote_types(self.embed.weight.dtype, torch.float32)

    def forward(self, input_ids: Tensor, mode: str = "parallel", chunk_size: int = 512) -> Tensor:
        """input_ids (B, T) -> logits (B, T, V), computed with the given form (all three are the same function)."""
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}; expected one of {MODES}")
        self._check_ids(input_ids)
        B, T = input_ids.shape
        if mode == "recurrent":  # inference only: the state is updated in place, outside autograd
            state = self.init_state(B, device=input_ids.device)
            with torch.no_grad():
                x = torch.stack([self._step_hidden(input_ids[:, t], state) for t in range(T)], dim=1)  # (B, T, d)
        else:
            tables = self._tables(torch.arange(T, device=input_ids.device), self._compute_dtype())
            x = self._embed(input_ids)  # (B, T, d)
            kernel = self.chunk_kernel if mode == "chunkwise" else "torch"
            if kernel == "fla-graphs" and self._retention_graphs is None:
                self._retention_graphs = RetentionGraphs(len(self.layers))
            graphs = self._retention_graphs if kernel == "fla-graphs" else None
            for i, layer in enumerate(self.layers):
                x, _ = layer(x, tables, mode, chunk_size, kernel=kernel,
                         graphs=(graphs, i) if graphs is not None else None)
        return self.lm_head(self.norm(x))

    # ---- decoding -----------------------------------------------------------------------------------------
    def init_state(self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> RetNetState:
        """Zero state for `batch_size` sequences at position 0 (dtype: cfg.state_dtype; float64 for a float64 model)."""
        cfg = self.cfg
        device = torch.device(device or self.device)
        if dtype is None:
            dtype = torch.float64 if self.embed.weight.dtype == torch.float64 else cfg.state_dtype
        self.constants(device)  # warm the cache outside any graph capture
        L, B, H, dk, dv = cfg.n_layers, batch_size, cfg.n_heads, cfg.qk_head_dim, cfg.v_head_dim
        return RetNetState(
            kv=torch.zeros(L, B, H, dk, dv, device=device, dtype=dtype),
            k_sum=torch.zeros(L, B, H, dk, device=device, dtype=dtype),
            k_sum_next=torch.zeros(L, B, H, dk, device=device, dtype=dtype),
            pos=torch.zeros((), device=device, dtype=torch.long),
        )

    @torch.no_grad()
    def prefill(
        self, input_ids: Tensor, state: RetNetState | None = None, chunk_size: int = 512, last_only: bool = True,
        segment_len: int | None = PREFILL_SEGMENT,
    ) -> tuple[Tensor, RetNetState]:
        """Run a whole prompt with the chunkwise form (no token loop), continuing from `state` (None -> fresh).

        The prompt is processed in segments of `segment_len` tokens (None: one segment) that carry the recurrent
        state, so peak memory is bounded by one segment, not by T; the result is the same function of the prompt.
        Returns logits (B, 1, V) if last_only else (B, T, V), and the state (updated in place) after the prompt."""
        self._check_ids(input_ids)
        B, T = input_ids.shape
        segment_len = T if segment_len is None else segment_len
        if segment_len < 1:
            raise ValueError(f"segment_len must be >= 1, got {segment_len}")
        if state is None:
            state = self.init_state(B, device=input_ids.device)
        kernel = self.chunk_kernel
        logits = []
        for start in range(0, T, segment_len):
            x = self._prefill_segment(input_ids[:, start:start + segment_len], state, chunk_size, kernel)  # (B, S, d)
            if not last_only:  # only the last token's logits are ever computed when last_only
                logits.append(self.lm_head(self.norm(x)))
        if last_only:
            logits.append(self.lm_head(self.norm(x[:, -1:])))
        return torch.cat(logits, dim=1), state

    def _prefill_segment(self, input_ids: Tensor, state: RetNetState, chunk_size: int, kernel: str) -> Tensor:
        """input_ids (B, S) -> hidden states (B, S, d) before the final norm; advances `state` in place."""
        S = input_ids.shape[1]
        dt = torch.promote_types(self._compute_dtype(), state.kv.dtype)
        tables = self._tables(state.pos + torch.arange(S, device=input_ids.device), dt)
        x = self._embed(input_ids)  # (B, S, d)
        for i, layer in enumerate(self.layers):
            x, (kv, k_sum) = layer(x, tables, "chunkwise", chunk_size, (state.kv[i], state.k_sum[i]), kernel=kernel)
            state.kv[i].copy_(kv)
            state.k_sum[i].copy_(k_sum)
        state.pos.add_(S)
        return x

    def _step_core(self, ids: Tensor, state: RetNetState) -> tuple[Tensor, Tensor]:
        """ids (B,) -> (last hidden x (B, d) before the final norm, norm(x)); advances `state` in place. No host
        sync. Per layer with kernel "triton": add+norm, qkvg GEMM, state pass, epilogue, out_proj GEMM, add+norm,
        FFN (two GEMMs and the activation)."""
        x = self._embed(ids)  # (B, d)
        dt = torch.promote_types(state.kv.dtype, torch.float32)
        t = self._tables(state.pos.view(1), dt)
        tables = RetentionTables(t.cos[0], t.sin[0], t.log_decay, t.row_norm[:, 0])  # (dk/2,), (H,)
        kernel, gemm = self.step_kernel, self.decode_gemm
        norms = [layer.retention_norm for layer in self.layers] + [self.norm]
        x, h = add_norm(x, None, norms[0], kernel == "triton")
        for i, layer in enumerate(self.layers):
            x, h = layer.step(x, h, norms[i + 1], tables, state.kv[i], state.k_sum[i], state.k_sum_next[i], kernel, gemm)
        if kernel == "triton-statepass":  # that path writes the new key sums to the scratch buffer
            state.k_sum.copy_(state.k_sum_next)
        state.pos.add_(1)
        return x, h

    def _step_hidden(self, ids: Tensor, state: RetNetState) -> Tensor:
        """ids (B,) -> last hidden (B, d) before the final norm; advances `state` in place. No host sync."""
        return self._step_core(ids, state)[0]

    @torch.no_grad()
    def step(self, next_ids: Tensor, state: RetNetState) -> tuple[Tensor, RetNetState]:
        """next_ids (B,) or (B, 1) -> logits (B, 1, V); `state` is advanced in place (graph-capturable)."""
        _, h = self._step_core(next_ids.reshape(state.batch_size), state)  # h: final norm of the last hidden
        return project(h, self.lm_head, self.decode_gemm).unsqueeze(1), state
