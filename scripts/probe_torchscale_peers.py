"""Which measurement set-up reproduces the torchscale numbers quoted in issue #7? (GPU diagnostic, not a suite.)

The issue quotes, for torchscale 0.3.0 at 6.7B bf16, batch 8: Transformer 92.6 ms (T=2048) and 194 ms (T=8192),
RetNet 49.7 ms (T=8192), memory 21.2 / 47.1 / 13.7 "GB". This times the same decode step as the peers in
`baselines/peers.py` under three autograd modes (inference_mode as the suites use, no_grad, and grad enabled with
trainable parameters, i.e. a script that forgot no_grad), for our preset's RetNet sizes and for torchscale's own
`retnet_7b` architecture (value dim and GLU width 6912), and reports torch's peak in both GB and GiB.
    python scripts/probe_torchscale_peers.py --out probe.json
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics

import torch

from retnet_bench.baselines import peers as P

GB, GIB = 1e9, 2**30


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def free() -> None:
    torch.cuda.synchronize()
    torch._C._cuda_clearCublasWorkspaces()
    torch.cuda.empty_cache()


def mode_ctx(mode: str):
    return {"inference_mode": torch.inference_mode, "no_grad": torch.no_grad,
            "grad": contextlib.nullcontext}[mode]()


def raw_step(peer: P._TorchscalePeer) -> None:
    """Peer.step without its inference_mode decorator: rewind to T, one incremental forward, greedy next id."""
    peer.rewind()
    logits, _ = peer.model(peer.tokens[:, : peer.pos + 1], incremental_state=peer.state)
    peer.pos += 1
    peer.tokens[:, peer.pos] = logits[:, -1].argmax(-1)


def measure(peer: P._TorchscalePeer, mode: str, batch: int, seq: int, n: int = 20) -> dict:
    peer.model.requires_grad_(mode == "grad")
    free()
    torch.cuda.reset_peak_memory_stats()
    with mode_ctx(mode):
        peer.prefill_state(batch, seq)
        for _ in range(3):
            raw_step(peer)
        times = []
        for _ in range(n):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            raw_step(peer)
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
    peak = torch.cuda.max_memory_allocated()
    peer.reset()
    peer.model.requires_grad_(False)
    ms = statistics.median(times)
    return dict(mode=mode, batch=batch, seq_len=seq, ms_per_step=round(ms, 2), tokens_per_s=round(batch * 1e3 / ms, 1),
                torch_peak_gb=round(peak / GB, 2), torch_peak_gib=round(peak / GIB, 2))


def torchscale_7b_retnet(dtype: torch.dtype, device: torch.device) -> P.TorchscaleRetNetPeer:
    """torchscale's registered `retnet_7b` sizes: d 4096, value dim 6912, GLU 6912, 16 heads, 32 layers."""
    ts = P._import_torchscale()
    args = ts.RetNetConfig(decoder_embed_dim=4096, decoder_value_embed_dim=6912, decoder_retention_heads=16,
                           decoder_ffn_embed_dim=6912, decoder_layers=32, vocab_size=P.VOCAB_SIZE, dropout=0.0,
                           drop_path_rate=0.0)
    with torch.device(device):
        model = ts.RetNetDecoder(args, embed_tokens=ts.TextEmbedding(args.vocab_size, args.decoder_embed_dim))
    return P.TorchscaleRetNetPeer(P._cast(model, dtype, device), dtype, device)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--preset", default="6.7b")
    args = ap.parse_args()
    dev, dtype = torch.device("cuda"), torch.bfloat16
    modes = ("inference_mode", "no_grad", "grad")
    plans = [
        ("torchscale-retnet (our sizes)", lambda: P.build_peer("torchscale-retnet", args.preset, dtype, dev),
         [(1, 8192), (8, 8192)]),
        ("torchscale-retnet (torchscale retnet_7b)", lambda: torchscale_7b_retnet(dtype, dev), [(8, 8192)]),
        ("torchscale-transformer", lambda: P.build_peer("torchscale-transformer", args.preset, dtype, dev),
         [(8, 2048), (8, 8192)]),
    ]
    out = dict(gpu=torch.cuda.get_device_name(), cpu=cpu_name(), torch=torch.__version__, results=[])
    print(out["gpu"], "|", out["cpu"], "|", torch.__version__, flush=True)
    for name, build, shapes in plans:
        peer = build()
        params_gb = peer.n_params * 2 / GB
        for batch, seq in shapes:
            for mode in modes:
                r = dict(peer=name, n_params=peer.n_params, weights_gb=round(params_gb, 2))
                try:
                    r.update(measure(peer, mode, batch, seq))
                except torch.OutOfMemoryError:  # grad mode keeps every step's graph (and cache copies) alive
                    peer.reset()
                    peer.model.requires_grad_(False)
                    r.update(mode=mode, batch=batch, seq_len=seq, status="oom")
                out["results"].append(r)
                print(json.dumps(r), flush=True)
        del peer
        free()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
