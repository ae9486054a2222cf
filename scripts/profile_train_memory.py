"""Where a training step's memory goes (GPU diagnostic for issue #12's memory target; not part of the suites).

Builds each model as a one-rank `table4` point does (fp32 master weights, FSDP2 with bf16 compute, AdamW), runs
warm-up steps, then one step under `SavedTensorCensus`: every tensor the forward saves for backward, attributed to
the module that saved it and counted once per storage. Prints what one block (layer 1) keeps per token, in bytes
and in units of d bf16 values (2 d bytes), the per-layer sum times the layer count, what the rest of the model keeps
(embedding, head, logits), and the allocator's peak over the step next to parameters + gradients + AdamW state.
    python scripts/profile_train_memory.py --preset 1.3b --seq 8192 [--family retnet:fla transformer:sdpa-cudnn]
Each model is censused in a fresh process (nothing of the previous one stays allocated). Writes train_memory.json
and train_memory.txt to $OUT (or the working directory). `--cpu-check` runs the tiny preset on the CPU (fp32; checks
this script only).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import torch
import torch.distributed as dist

from retnet_bench.suites.training.fsdp import init_distributed, shutdown_distributed
from retnet_bench.suites.training.launch import prepare_for_training
from retnet_bench.suites.training.recipe import ModelRecipe, build_model, model_forward
from retnet_bench.suites.training.saved import SavedTensorCensus
from retnet_bench.suites.trackers import AllocRetries
from retnet_bench.suites.training.step import TrainSettings, next_token_loss, synthetic_batch, train_step

GB = 1e9


def census_one(family: str, kernel: str, preset: str, seq: int, device: torch.device) -> dict:
    cuda = device.type == "cuda"
    settings = TrainSettings(seq_len=seq, steps=1, warmup_steps=1, chunk_size=min(512, seq),
                             compute_dtype="bfloat16" if cuda else "float32")
    recipe = ModelRecipe(family, preset, kernel=kernel, overrides={} if cuda else {"vocab_size": 256})
    cfg = recipe.config()
    mesh = init_distributed(device, 0, 1, settings.collective_timeout_s, dist.HashStore())
    retries = AllocRetries(device)  # over both steps, as a table4 row counts them (warm-up included)
    try:
        torch.manual_seed(0)
        model = build_model(recipe, device, torch.float32, settings.torch_compute_dtype)
        opt = prepare_for_training(model, recipe, settings, mesh, device)  # as a one-rank table4 point
        fwd = lambda ids: model_forward(model, recipe, ids, settings.chunk_size)  # noqa: E731
        train_step(fwd, opt, synthetic_batch(0, settings, cfg.vocab_size, 1, 0).to(device))  # states exist now
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
        micro = synthetic_batch(1, settings, cfg.vocab_size, 1, 0).to(device)[0]  # (1, T + 1)
        with SavedTensorCensus(model) as census:
            loss = next_token_loss(fwd(micro[:, :-1]), micro[:, 1:])
        # the allocator's view of each phase, a check on the census: what the forward leaves allocated is what it
        # saved plus the loss; what backward needs above that is transient (kernel workspace, gradients)
        phases = {}
        if cuda:
            torch.cuda.synchronize()
            phases["forward_peak_gb"] = torch.cuda.max_memory_allocated(device) - before
            phases["kept_after_forward_gb"] = torch.cuda.memory_allocated(device) - before
            torch.cuda.reset_peak_memory_stats(device)
        loss.backward()
        if cuda:
            torch.cuda.synchronize()
            phases["backward_peak_gb"] = torch.cuda.max_memory_allocated(device) - before
        opt.step()
        opt.zero_grad(set_to_none=True)
        # the step's peak: the forward's, or that of backward + optimizer (the peak was reset before backward)
        peak = before + max(phases["forward_peak_gb"], torch.cuda.max_memory_allocated(device) - before) if cuda else 0
        reserved = torch.cuda.max_memory_reserved(device) if cuda else 0
    finally:
        shutdown_distributed()
    n_params = sum(p.numel() for p in model.parameters())
    per_tok = lambda b: b / seq  # noqa: E731 - bytes per token (batch 1)
    unit = 2 * cfg.d_model  # one bf16 vector of width d
    entries = census.block_entries(1)
    block = [dict(module=_in_block(e.module, "layers.1"), shape=list(e.shape),
                  dtype=str(e.dtype).removeprefix("torch."), bytes_per_token=round(per_tok(e.nbytes), 1),
                  d_units=round(per_tok(e.nbytes) / unit, 3))
             for e in entries]
    layer_bytes = sum(e.nbytes for e in entries)
    shared = [f"{_in_block(e.module, 'layers.1')} {list(e.shape)} {str(e.dtype).removeprefix('torch.')}"
              for e in census.block_entries(1, shared=True)]  # saved again: a view of a storage counted before
    by_module = census.by_module()
    layers_total = sum(v for k, v in by_module.items() if k.startswith("layers."))
    grouped: dict[str, float] = defaultdict(float)
    for b in block:
        grouped[b["module"]] += b["d_units"]
    return dict(family=family, kernel=recipe.resolved_kernel(device, settings.torch_compute_dtype), preset=preset,
                seq_len=seq, d_model=cfg.d_model, n_layers=cfg.n_layers, n_params=n_params,
                saved_layers_bytes=layers_total, layer1_bytes=layer_bytes,
                saved_total_gb=round(census.total_bytes() / GB, 3), saved_layers_gb=round(layers_total / GB, 3),
                saved_rest_gb=round((census.total_bytes() - layers_total) / GB, 3),
                layer1_d_units=round(layer_bytes / seq / unit, 3), layer1_by_module=dict(grouped), layer1=block,
                layer1_shared=shared,
                peak_allocated_gb=round(peak / GB, 3), peak_reserved_gb=round(reserved / GB, 3),
                alloc_retries=retries.count(), allocated_before_gb=round(before / GB, 3) if cuda else 0.0,
                **{k: round(v / GB, 3) for k, v in phases.items()},
                params_grads_adam_gb=round(n_params * 16 / GB, 3))


def _in_block(name: str, block: str) -> str:
    """A module's name inside its block ("retention.qkvg"; the training wrapper's "block." dropped; the block itself
    is "(block)": ops of the block's own forward, such as the Transformer FFN's GELU)."""
    rest = name.removeprefix(block).removeprefix(".").removeprefix("block").removeprefix(".")
    return rest or "(block)"


def report_lines(r: dict) -> list[str]:
    if "error" in r:
        return [f"== {r['family']} ({r['kernel']}): {r['error']}"]
    lines = [f"== {r['family']} ({r['kernel']}) {r['preset']} T={r['seq_len']}: saved for backward "
             f"{r['saved_total_gb']} GB ({r['saved_layers_gb']} in {r['n_layers']} blocks, {r['saved_rest_gb']} "
             "elsewhere); one block keeps "
             f"{r['layer1_d_units']} d-units per token (1 unit = d bf16 values = {2 * r['d_model']} B)",
             f"   allocator peak over the step {r['peak_allocated_gb']} GB (reserved {r['peak_reserved_gb']} GB, "
             f"{r['alloc_retries']} cudaMalloc retries in 2 steps); allocated before it {r['allocated_before_gb']}"
             f" GB; fp32 params + grads + AdamW state = {r['params_grads_adam_gb']} GB"]
    if "kept_after_forward_gb" in r:
        lines.append(f"   above that: forward peak {r['forward_peak_gb']} GB, kept after forward "
                     f"{r['kept_after_forward_gb']} GB (the census: {r['saved_total_gb']} GB saved), backward peak "
                     f"{r['backward_peak_gb']} GB")
    for m, u in sorted(r["layer1_by_module"].items(), key=lambda kv: -kv[1]):
        lines.append(f"   {u:7.3f} d  {m}")
    for b in r["layer1"]:
        lines.append(f"      {b['d_units']:7.3f} d  {b['module']:28s} {b['dtype']:9s} {b['shape']}")
    for e in r.get("layer1_shared", []):
        lines.append(f"        0 (storage counted before)  {e}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="1.3b")
    ap.add_argument("--seq", type=int, default=8192)
    ap.add_argument("--family", nargs="+", default=["retnet:fla", "transformer:sdpa-cudnn"])
    ap.add_argument("--cpu-check", action="store_true", help="run on the CPU (tiny preset): checks this script only")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: census of --family[0] alone, JSON to this path
    args = ap.parse_args()
    if not torch.cuda.is_available() and not args.cpu_check:
        raise SystemExit("needs a CUDA GPU (or --cpu-check)")
    if args.cpu_check and args.preset not in ("tiny", "small"):
        ap.error(f"--cpu-check runs on the CPU: use --preset tiny or small, not {args.preset}")
    if args.one:  # a fresh process per model: nothing of the previous model stays allocated
        device = torch.device("cpu") if args.cpu_check else torch.device("cuda", 0)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        family, kernel = args.family[0].split(":")
        try:
            r = census_one(family, kernel, args.preset, args.seq, device)
        except Exception as e:  # noqa: BLE001 - one contestant failing leaves the others' censuses
            r = dict(family=family, kernel=kernel, error=f"{type(e).__name__}: {str(e).splitlines()[0][:300]}")
        Path(args.one).write_text(json.dumps(r))
        return
    results, lines = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i, spec in enumerate(args.family):
            path = Path(tmp, f"{i}.json")
            cmd = [sys.executable, __file__, "--preset", args.preset, "--seq", str(args.seq), "--family", spec,
                   "--one", str(path)] + (["--cpu-check"] if args.cpu_check else [])
            proc = subprocess.run(cmd, capture_output=True, text=True,
                                  env={**os.environ, "MASTER_ADDR": "127.0.0.1"})
            r = json.loads(path.read_text()) if path.exists() else dict(
                family=spec.split(":")[0], kernel=spec.split(":")[-1],
                error=f"exit {proc.returncode}: {(proc.stderr.strip().splitlines() or [''])[-1][:300]}")
            results.append(r)
            lines += report_lines(r)
    out = Path(os.environ.get("OUT", "."))
    (out / "train_memory.json").write_text(json.dumps(results, indent=1))
    (out / "train_memory.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
