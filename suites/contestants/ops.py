"""Op-level contestants for the `kernels` suite: one layer's attention vs retention, at the 6.7B (or any
preset's) head shapes, without projections.

Phases: `op_fwd` (causal forward over T tokens), `op_fwdbwd` (forward + backward), `op_decode` (one new token
per sequence against a KV cache of T tokens, or one recurrent retention step with its state).
"""
from __future__ import annotations

import torch

from retnet import RetNetConfig
from retnet.kernels import recurrent_step, triton_available
from retnet.retention import chunkwise_retention, log_decay, parallel_retention, position_tables, rotary_angle
from retnet_bench.baselines import TransformerConfig
from retnet_bench.baselines import kernels as attn

from .base import Analytic, Contestant
from .retnet import _chunk_kernel_available, _step_kernel_available
from .spec import Availability, BuildArgs, ContestantSpec, contestant


class OpContestant(Contestant):
    def __init__(self, spec: ContestantSpec, a: BuildArgs):
        super().__init__(a.device, a.dtype, use_graph=False)
        self.impl, self.kernel, self.chunk_size, self.arch = spec.name, a.kernel, a.chunk_size, spec.arch
        device, dtype = a.device, a.dtype
        self.rcfg, self.tcfg = RetNetConfig.from_name(a.preset), TransformerConfig.from_name(a.preset)
        self.gen = torch.Generator(device="cpu").manual_seed(a.seed)
        self.elt = torch.empty((), dtype=dtype).element_size()
        self._fn = None
        self._bytes = 0

    def _rand(self, *shape: int, dtype: torch.dtype | None = None, grad: bool = False) -> torch.Tensor:
        t = torch.randn(*shape, generator=self.gen).to(self.device, dtype or self.dtype)
        return t.requires_grad_(grad)

    def analytic(self, batch: int, seq_len: int) -> Analytic:
        return Analytic(0, 0, self._bytes, 0.0)

    def setup(self, phase: str, batch: int, seq_len: int) -> None:
        """Allocate inputs for one point and set `self._fn`, the callable the runner times."""
        self._fn = None
        grad = phase == "op_fwdbwd"
        if self.impl == "attention":
            H, D = self.tcfg.n_heads, self.tcfg.head_dim
            if phase == "op_decode":
                self._attention_decode(batch, seq_len, H, D)
                return
            q, k, v = (self._rand(batch, seq_len, H, D, grad=grad) for _ in range(3))  # (B, T, H, D)

            def fwd():
                with attn.sdpa_context(self.kernel):
                    out = attn.causal_attention(q, k, v, self.kernel)
                if grad:
                    out.backward(torch.ones_like(out))
            self._fn = fwd
            return
        H, dk, dv = self.rcfg.n_heads, self.rcfg.qk_head_dim, self.rcfg.v_head_dim
        lg = log_decay(H, self.rcfg.decay).to(self.device)
        if phase == "op_decode":  # one recurrent step: state (B, H, dk, dv) read and written
            q, k, v = self._rand(batch, H, dk), self._rand(batch, H, dk), self._rand(batch, H, dv)
            kv = torch.zeros(batch, H, dk, dv, device=self.device, dtype=self.rcfg.state_dtype)
            k_sum = torch.zeros(batch, H, dk, device=self.device, dtype=self.rcfg.state_dtype)
            k_sum_out = torch.empty_like(k_sum)
            cos, sin, row_norm = position_tables(torch.tensor([seq_len], device=self.device), rotary_angle(dk),
                                                 lg, torch.float32)
            args = (q, k, v, kv, k_sum, k_sum_out, cos[0], sin[0], lg.float(), row_norm[:, 0], dk ** -0.5)
            self._bytes = 2 * kv.nbytes
            self._fn = lambda: recurrent_step(self.kernel, *args)
            return
        q, k = self._rand(batch, H, seq_len, dk, grad=grad), self._rand(batch, H, seq_len, dk, grad=grad)
        v = self._rand(batch, H, seq_len, dv, grad=grad)  # (B, H, T, dv)
        _, _, row_norm = position_tables(torch.arange(seq_len, device=self.device), rotary_angle(dk), lg, self.dtype)
        lg_c = lg.to(self.dtype)
        if self.impl == "retention-chunkwise" and self.kernel != "torch":
            from retnet.kernels import chunk_retention as fused

            # the fused kernels take (B, T, H, d): make the inputs in that layout, as the model's projections give them
            qt, kt, vt = (self._rand(batch, seq_len, H, d, grad=grad) for d in (dk, dk, dv))

        def ret():
            if self.impl == "retention-parallel":
                out = parallel_retention(q, k, v, lg_c, row_norm)
            elif self.kernel == "torch":
                out = chunkwise_retention(q, k, v, lg_c, row_norm, chunk_size=self.chunk_size)[0]
            else:  # a fused kernel in fla's (B, T, H, d) layout, unnormalised (the head norm after it removes the scale)
                out = fused(qt, kt, vt, lg, kernel=self.kernel, chunk_size=self.chunk_size)[0]
            if grad:
                out.backward(torch.ones_like(out))
        self._fn = ret

    def _attention_decode(self, batch: int, seq_len: int, H: int, D: int) -> None:
        q = self._rand(batch, H, 1, D)
        if attn.uses_bshd_cache(self.kernel):
            kc, vc = self._rand(batch, seq_len, H, D), self._rand(batch, seq_len, H, D)
            lens = torch.full((batch,), seq_len, dtype=torch.int32, device=self.device)
            qb = q.transpose(1, 2).contiguous()  # (B, 1, H, D)
            if self.kernel == "flash-attn-4":
                self._fn = lambda: attn.decode_attention_flash_attn_4(qb, kc, vc, lens)
            else:
                kn, vn = self._rand(batch, 1, H, D), self._rand(batch, 1, H, D)
                lens -= 1
                self._fn = lambda: attn.decode_attention_flash_attn(qb, kc, vc, kn, vn, lens)
        else:
            kc, vc = self._rand(batch, H, seq_len, D), self._rand(batch, H, seq_len, D)
            mask = torch.zeros(1, 1, 1, seq_len, device=self.device, dtype=self.dtype)

            def fn():
                with attn.sdpa_context(self.kernel):
                    attn.decode_attention_sdpa(q, kc, vc, mask, self.kernel)
            self._fn = fn
        self._bytes = 2 * batch * seq_len * H * D * self.elt

    def step(self) -> None:
        self._fn()

    def end(self) -> None:
        self._fn = None


def _attention_available(kernel: str, device: torch.device, dtype: torch.dtype) -> Availability:
    return attn.kernel_available(kernel, device, dtype, phase="train")


@contestant(name="attention", arch="transformer", role="baseline", phases=("op_fwd", "op_fwdbwd", "op_decode"),
            description="one layer's causal attention (op level), chosen kernel", kernels=tuple(attn.KERNELS),
            default_kernel="sdpa", available=_attention_available)
@contestant(name="retention-parallel", arch="retnet", role="candidate", phases=("op_fwd", "op_fwdbwd"),
            description="one layer's retention, parallel form (op level)", kernels=("torch",))
@contestant(name="retention-chunkwise", arch="retnet", role="candidate", phases=("op_fwd", "op_fwdbwd"),
            description="one layer's retention, chunkwise form (op level), kernel by name (torch, fla)",
            kernels=("torch", "fla"), available=_chunk_kernel_available)
@contestant(name="retention-recurrent", arch="retnet", role="candidate", phases=("op_decode",),
            description="one recurrent retention step (op level), torch or triton", kernels=("torch", "triton"),
            available=_step_kernel_available)
def build_op(spec: ContestantSpec, args: BuildArgs) -> OpContestant:
    return OpContestant(spec, args)
