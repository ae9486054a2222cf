"""GPU check of the training engine (scripts/gpu_train_check.sh): both families at one size, world sizes 1, 2, 4 (as
many as there are GPUs), one line per point and a JSON file in --out / $OUT with every point's row fields, its
ranks' results and the scaling efficiency per GPU against world size 1.

    python -m retnet_bench.suites.training.gpu_check --preset 1.3b --seq-len 8192 --out $OUT
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import torch

from .fsdp import NCCL_ENV_DEFAULTS
from .recipe import ModelRecipe
from .result import TrainPointResult, run_point
from .step import TrainSettings

# fastest first, as measured on the H200 for training by the lead's kernel suite; the first that runs here is used
TRANSFORMER_KERNELS = ("flash-attn-4", "flash-attn", "sdpa-cudnn", "sdpa-flash", "sdpa")


def best_transformer_kernel(head_dim: int) -> str:
    from ...baselines.kernels import kernel_available

    for name in TRANSFORMER_KERNELS:
        if kernel_available(name, "cuda", torch.bfloat16, "train", head_dim)[0]:
            return name
    return "sdpa"


def _line(family: str, p: TrainPointResult) -> str:
    def f(x, spec):
        return "-" if x is None else format(x, spec)
    return (f"{family:12s} ws={p.world_size} kernel={p.kernel} status={p.status} step_ms={f(p.ms_median, '.1f')} "
            f"[{f(p.ms_p10, '.1f')}, {f(p.ms_p90, '.1f')}] tok/s={f(p.tokens_per_s, '.0f')} "
            f"tok/s/gpu={f(p.tokens_per_s_per_gpu, '.0f')} mfu={f(p.mfu, '.3f')} "
            f"peak={f(p.mem_torch_peak_gb, '.1f')}GB reserved={f(p.mem_torch_reserved_gb, '.1f')}GB "
            f"nvml={f(p.mem_nvml_peak_gb, '.1f')}GB" + (f" error={p.error[:300]}" if p.error else ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="1.3b")
    ap.add_argument("--families", default="retnet,transformer")
    ap.add_argument("--world-sizes", default="1,2,4", help="kept only where <= visible GPUs")
    ap.add_argument("--seq-len", type=int, default=8192)
    ap.add_argument("--micro-batch", type=int, default=1)
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--checkpointing", default="none")
    ap.add_argument("--retnet-kernel", default="auto")
    ap.add_argument("--transformer-kernel", default="best")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cpu: a dry run of this script (gloo)")
    ap.add_argument("--out", default=os.environ.get("OUT") or ".")
    args = ap.parse_args(argv)

    n_gpus = torch.cuda.device_count()
    if args.device == "cuda" and n_gpus == 0:
        print("no CUDA GPU visible: this check needs GPUs (--device cpu for a dry run)")
        return 2
    limit = n_gpus if args.device == "cuda" else os.cpu_count()
    world_sizes = [w for w in (int(x) for x in args.world_sizes.split(",")) if w <= limit]
    settings = TrainSettings(micro_batch=args.micro_batch, grad_accum=args.grad_accum, seq_len=args.seq_len,
                             steps=args.steps, warmup_steps=args.warmup, checkpointing=args.checkpointing)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    gpu = torch.cuda.get_device_name(0) if n_gpus else None
    report = {"env": {"torch": torch.__version__, "gpu": gpu, "n_gpus": n_gpus, "device": args.device,
                      "host": platform.node(), "nccl_env": {k: os.environ.get(k) for k in NCCL_ENV_DEFAULTS}},
              "settings": dataclasses.asdict(settings), "points": [], "scaling": {}}
    path = out_dir / f"train_check_{args.preset}.json"
    print(f"{report['env']}  world sizes {world_sizes}  settings {report['settings']}", flush=True)
    for family in args.families.split(","):
        if family == "retnet":
            kernel = args.retnet_kernel
        else:
            kernel = args.transformer_kernel
            if kernel == "best" and args.device == "cpu":
                kernel = "sdpa"
            elif kernel == "best":
                kernel = best_transformer_kernel(ModelRecipe(family, args.preset).config().head_dim)
        recipe = ModelRecipe(family, args.preset, kernel=kernel)
        per_gpu: dict[int, float | None] = {}
        for world in world_sizes:
            t0 = time.monotonic()
            point = run_point(world, recipe, settings, args.device)
            per_gpu[world] = point.tokens_per_s_per_gpu
            print(_line(family, point) + f"  ({time.monotonic() - t0:.0f} s)", flush=True)
            report["points"].append({"family": family, "preset": args.preset, "kernel_requested": kernel,
                                     "row": point.row_fields(settings), "losses": point.losses,
                                     "ranks": [dataclasses.asdict(r) for r in point.ranks]})
            path.write_text(json.dumps(report, indent=1))  # after every point: a timeout keeps what finished
        base = per_gpu.get(1)
        report["scaling"][family] = {w: (v / base if v and base else None) for w, v in per_gpu.items()}
        print(f"{family}: scaling efficiency per GPU vs 1 GPU {report['scaling'][family]}", flush=True)
    path.write_text(json.dumps(report, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
