"""RetNet contestants: recurrent decode (chunkwise prefill, then one recurrent step per token) and training in
the parallel / chunkwise forms. Specs declared here, beside the adapter."""
from __future__ import annotations

import torch

import retnet
from retnet import analytic as ra

from .base import Analytic, Contestant, random_ids, recurrent_state_costs
from .spec import Availability, BuildArgs, ContestantSpec, contestant

STATE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _step_kernel_default(device: torch.device, preset: str = "") -> str:
    from retnet.kernels import triton_available

    return "triton" if device.type == "cuda" and triton_available() else "torch"


def _step_kernel_available(kernel: str, device: torch.device, dtype: torch.dtype) -> Availability:
    if kernel == "triton":
        from retnet.kernels import triton_available

        if device.type != "cuda" or not triton_available():
            return False, "the triton step kernel needs a CUDA GPU and the triton package"
    return True, ""


def _chunk_kernel_available(kernel: str, device: torch.device, dtype: torch.dtype) -> Availability:
    from retnet.kernels import chunk_kernel_available

    return chunk_kernel_available(kernel, device)


def _chunk_kernel_default(device: torch.device, preset: str = "") -> str:
    """`auto` for the suite's bf16 weights: fla on a GPU, unless refused at the preset's head dims."""
    from retnet.kernels.chunk import auto_chunk_kernel

    head_dims = retnet.RetNetConfig.from_name(preset).head_dims if preset in retnet.PRESETS else None
    return auto_chunk_kernel(device, torch.bfloat16, head_dims)


class RetNetContestant(Contestant):
    arch = "retnet"

    def __init__(self, spec: ContestantSpec, a: BuildArgs):
        super().__init__(a.device, a.dtype, a.use_graph)
        self.impl, self.kernel, self.chunk_size, self.seed = spec.name, a.kernel, a.chunk_size, a.seed
        overrides = {}
        if a.variant.state_dtype is not None:
            overrides["state_dtype"] = STATE_DTYPES[a.variant.state_dtype]
        if spec.name == "retnet-recurrent":
            overrides.update(step_kernel=a.kernel, decode_gemm=a.decode_gemm)
        elif spec.name == "retnet-chunkwise":
            overrides["chunk_kernel"] = a.kernel
        self.cfg = retnet.RetNetConfig.from_name(a.preset, **overrides)
        torch.manual_seed(a.seed)
        with torch.device(a.device):
            self.model = retnet.RetNet(self.cfg).to(a.dtype)
        self.model.eval()
        self.n_params = sum(p.numel() for p in self.model.parameters())
        self.vocab = self.cfg.vocab_size
        self.max_seq_len = getattr(self.cfg, "max_seq_len", None)
        self.state_dtype = self.cfg.state_dtype
        self.state = None
        self.ids: torch.Tensor | None = None
        self.prefill_segment = 0  # 0: the model's default segment (retnet.model.PREFILL_SEGMENT)

    def analytic(self, batch: int, seq_len: int) -> Analytic:
        return recurrent_state_costs(self.n_params, self.vocab, self.cfg.d_model, batch, self.dtype.itemsize,
                                     ra.state_bytes(self.cfg, batch, self.state_dtype),
                                     ra.flops_per_token(self.cfg, seq_len))

    @torch.inference_mode()
    def prefill(self, batch: int, seq_len: int) -> None:
        prompt = random_ids(self.vocab, batch, seq_len, self.device, self.seed)
        from retnet.model import PREFILL_SEGMENT

        logits, self.state = self.model.prefill(prompt, chunk_size=self.chunk_size, last_only=True,
                                                segment_len=self.prefill_segment or PREFILL_SEGMENT)
        self.ids = logits[:, -1].argmax(-1)  # (B,) first generated token

    @property
    def prefill_kernel(self) -> str:
        """The retention kernel the prefill runs (its rows carry it; the decode rows carry the step kernel)."""
        return str(getattr(self.model, "chunk_kernel", "torch"))

    @torch.inference_mode()
    def fill(self, batch: int, seq_len: int) -> None:
        self.state = self.model.init_state(batch, device=self.device)
        self.state.kv.normal_(std=0.02)
        self.state.k_sum.normal_(std=0.02)
        self.state.pos.fill_(seq_len)
        self.ids = random_ids(self.vocab, batch, 1, self.device, self.seed)[:, 0]

    def _step(self) -> None:
        logits, _ = self.model.step(self.ids, self.state)  # state updated in place
        self.ids.copy_(logits[:, -1].argmax(-1))

    def end(self) -> None:
        super().end()
        self.state, self.ids = None, None

    def train_step(self, batch: int, seq_len: int) -> None:
        self.model.train()
        ids = random_ids(self.vocab, batch, seq_len, self.device, self.seed)
        mode = "parallel" if self.impl == "retnet-parallel" else "chunkwise"
        loss = self._lm_loss(self.model(ids, mode=mode, chunk_size=self.chunk_size), ids)
        loss.backward()
        self.model.zero_grad(set_to_none=False)  # keep grads allocated: a real training loop holds them

    def close(self) -> None:
        super().close()
        del self.model


@contestant(name="retnet-recurrent", arch="retnet", role="candidate", phases=("decode", "capacity"),
            description="RetNet: chunkwise prefill, then the recurrent step (one CUDA graph per step on GPU)",
            kernels=("torch", "triton"), default_kernel=_step_kernel_default, available=_step_kernel_available,
            variants=("state_dtype",), decode_gemm=True)
@contestant(name="retnet-chunkwise", arch="retnet", role="candidate", phases=("train",),
            description="RetNet training in the chunkwise recurrent form, retention kernel by name (torch, fla, fla-graphs:"
                        " fla replayed from CUDA graphs)",
            kernels=("torch", "fla", "fla-graphs"), default_kernel=_chunk_kernel_default, available=_chunk_kernel_available,
            install_hint="pip install fla-core==0.6.0 (for the fla kernel)", recipe=lambda a: _recipe(a))
@contestant(name="retnet-parallel", arch="retnet", role="candidate", phases=("train",),
            description="RetNet training in the parallel form (T x T decay mask, plain PyTorch)")
def build_retnet(spec: ContestantSpec, args: BuildArgs) -> RetNetContestant:
    return RetNetContestant(spec, args)


def _recipe(a: BuildArgs):
    from ..training import ModelRecipe

    return ModelRecipe("retnet", a.preset, kernel=a.kernel)
