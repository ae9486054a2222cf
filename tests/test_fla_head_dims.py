"""fla's chunk kernel is refused at the head dims where its backward is wrong (retnet.kernels.chunk.fla_head_dim_problem):
the rule on a CPU (GPU kind and Triton version faked), the skipped row it gives, and on a GPU that the rule refuses
exactly the shapes where fla's gradients are really wrong.

    python tests/test_fla_head_dims.py DK DV   # one shape's fla-vs-torch errors per pair of configs of fla's two
                                               # backward kernels (the GPU test's child process)
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import retnet.kernels.chunk as chunk_mod
from retnet.kernels import ChunkKernelUnavailable, chunk_kernel_available

sys.path.insert(0, str(Path(__file__).parent))
from test_retention_kernels import BF16_RMS, _rms_ratio  # noqa: E402 - fla's tolerance and metric, in one place


@pytest.fixture
def hopper_with_buggy_triton(monkeypatch):
    """A Hopper GPU, Triton 3.6.0 and fla importable, as on the lent H200 (faked: this runs on a CPU)."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(chunk_mod, "_triton_version", lambda: (3, 6, 0))
    monkeypatch.setattr(chunk_mod, "_fla_chunk_simple_gla", lambda: (object(), ""))


def test_the_rule(hopper_with_buggy_triton, monkeypatch):
    ok, why = chunk_kernel_available("fla", "cuda", (32, 64))  # the tiny preset's heads
    assert not ok and "wrong dq, dk at" in why and "3.6.0" in why and "#640" in why
    ok, why = chunk_kernel_available("fla", "cuda", (64, 32))  # dv below 64: a wrong dv, no upstream report
    assert not ok and "wrong dv at" in why and "#640" not in why
    assert "wrong dq, dk, dv at" in chunk_kernel_available("fla", "cuda", (16, 32))[1]
    for dims in [(32, 128), (128, 32), (256, 16)]:
        assert not chunk_kernel_available("fla", "cuda", dims)[0], dims
    for dims in [(64, 64), (64, 128), (256, 512)]:  # measured right on the H200
        assert chunk_kernel_available("fla", "cuda", dims) == (True, ""), dims
    assert chunk_kernel_available("fla", "cuda") == (True, "")  # no shape given: the device and install only
    assert chunk_kernel_available("torch", "cuda", (32, 64)) == (True, "")
    monkeypatch.setattr(chunk_mod, "_triton_version", lambda: (3, 7, 1))  # the fixed Triton
    assert chunk_kernel_available("fla", "cuda", (32, 64)) == (True, "")
    monkeypatch.setattr(chunk_mod, "_triton_version", lambda: (3, 3, 1))  # before the bug
    assert chunk_kernel_available("fla", "cuda", (32, 64)) == (True, "")
    monkeypatch.setattr(chunk_mod, "_triton_version", lambda: (3, 6, 0))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))  # an A100: not measured
    assert chunk_kernel_available("fla", "cuda", (32, 64)) == (True, "")


def test_the_triton_version_parse(monkeypatch):
    import types

    monkeypatch.setitem(sys.modules, "triton", types.SimpleNamespace(__version__="3.7.1+git1a2b3c"))
    assert chunk_mod._triton_version() == (3, 7, 1)
    monkeypatch.setitem(sys.modules, "triton", types.SimpleNamespace(__version__="3.6.0"))
    assert chunk_mod._triton_version() == (3, 6, 0)


def test_auto_picks_torch_and_an_explicit_fla_is_refused(hopper_with_buggy_triton):
    from retnet_bench.suites.training.recipe import ModelRecipe

    bf16 = torch.bfloat16
    assert ModelRecipe("retnet", "tiny").resolved_kernel(torch.device("cuda"), bf16) == "torch"  # dk 32
    assert ModelRecipe("retnet", "small").resolved_kernel(torch.device("cuda"), bf16) == "fla"  # dk 64
    with pytest.raises(ChunkKernelUnavailable, match=r"\(dk, dv\) = \(32, 64\)"):
        ModelRecipe("retnet", "tiny", kernel="fla").resolved_kernel(torch.device("cuda"), bf16)
    assert ModelRecipe("retnet", "small", kernel="fla").resolved_kernel(torch.device("cuda"), bf16) == "fla"


def test_the_kernel_call_raises_the_reason():
    q = k = torch.zeros(1, 4, 2, 32, dtype=torch.bfloat16)
    v = torch.zeros(1, 4, 2, 64, dtype=torch.bfloat16)
    with pytest.raises(ChunkKernelUnavailable, match="'fla' unavailable"):  # here: no CUDA device
        chunk_mod.chunk_retention(q, k, v, torch.zeros(2), kernel="fla")


def test_the_kernel_call_asks_about_its_head_dims_when_a_backward_can_follow(monkeypatch):
    """(dk, dv) from q and v, and only where autograd records the call: the forward was right at every shape."""
    asked = []

    def spy(name, device, head_dims=None):
        asked.append(head_dims)
        return False, "spy"

    monkeypatch.setattr(chunk_mod, "chunk_kernel_available", spy)
    q, k = (torch.zeros(1, 4, 2, 32, dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
    v = torch.zeros(1, 4, 2, 64, dtype=torch.bfloat16)
    for grad in (True, False):
        with torch.set_grad_enabled(grad), pytest.raises(ChunkKernelUnavailable, match="spy"):
            chunk_mod.chunk_retention(q, k, v, torch.zeros(2), kernel="fla")
    with pytest.raises(ChunkKernelUnavailable):
        chunk_mod.chunk_retention(q.detach(), k.detach(), v, torch.zeros(2), kernel="fla")
    assert asked == [(32, 64), None, None]


def test_a_suite_s_default_kernel_follows_the_preset(hopper_with_buggy_triton):
    """A suite that names no RetNet chunk kernel runs fla on a GPU, except where it is refused (`tiny`: dk 32)."""
    from retnet_bench.suites.contestants.spec import get_spec

    spec = get_spec("retnet-chunkwise")
    assert spec.resolve_kernels([], torch.device("cuda"), "tiny") == ["torch"]
    assert spec.resolve_kernels([], torch.device("cuda"), "small") == ["fla"]
    assert spec.resolve_kernels([], torch.device("cuda"), "1.3b") == ["fla"]
    assert spec.resolve_kernels(["fla"], torch.device("cuda"), "tiny") == ["fla"]  # asked for: a skipped row says why
    assert spec.resolve_kernels([], torch.device("cpu"), "1.3b") == ["torch"]


def test_a_refused_training_point_is_a_skipped_row_and_the_sweep_goes_on(tmp_path, monkeypatch):
    from retnet_bench.suites import RunOptions, load_suite, run_suite
    from retnet_bench.suites.runner import read_rows
    from retnet_bench.suites.training import recipe as recipe_mod

    suite = tmp_path / "s.toml"
    suite.write_text('name = "refused"\ndtype = "float32"\nmodels = ["tiny"]\n[train]\n'
                     'impls = ["retnet-chunkwise", "transformer"]\nkernels = ["sdpa"]\nbatch_sizes = [1]\n'
                     'seq_lens = [16]\nsteps = 1\nchunk_size = 8\n')

    def refuse(self, device, compute_dtype):
        if self.family == "retnet":
            raise ChunkKernelUnavailable("chunk kernel 'torch' refused here (a test)")
        return self.kernel

    monkeypatch.setattr(recipe_mod.ModelRecipe, "resolved_kernel", refuse)
    out = run_suite(load_suite(str(suite)), RunOptions(device=torch.device("cpu"), out_root=tmp_path / "results",
                                                       run_id="r", progress=False))
    rows = {r["impl"]: r for r in read_rows(out.run_dir / "rows.jsonl")}
    assert rows["retnet-chunkwise"]["status"] == "skipped" and "a test" in rows["retnet-chunkwise"]["error"]
    assert rows["transformer"]["status"] == "ok"


# ---- GPU: the rule against the kernel -------------------------------------------------------------------------
ALLOWED = [(64, 64), (64, 128), (128, 256)]  # fla's smallest allowed tiles, and two more
REFUSED = [(16, 32), (16, 64), (32, 64), (32, 128), (16, 128), (64, 32), (128, 32)]  # (32, 64): the tiny preset's
needs_fla_gpu = pytest.mark.skipif(not (torch.cuda.is_available() and chunk_kernel_available("fla", "cuda")[0]),
                                   reason="needs a CUDA GPU with fla-core importable")


def _tuner(kernel: str):
    """fla's autotuner of one backward kernel of chunk_o: `chunk_bwd_kernel_dqkwg` (dq, dk) or `chunk_bwd_kernel_dv`
    (dv), under triton.heuristics."""
    from triton.runtime.autotuner import Autotuner

    from fla.ops.common import chunk_o

    obj = getattr(chunk_o, kernel)
    while not isinstance(obj, Autotuner):
        obj = obj.fn
    return obj


def _fla_against_torch_per_config(dk: int, dv: int, device: str = "cuda") -> None:
    """Prints one line per pair of configs of fla's two backward kernels (dq/dk, dv): the RMS error ratios of fla's
    raw kernel (no guard) against the torch kernel, o, dq, dk, dv (bf16, B 2, T 256), or why that pair cannot launch
    (a config that needs more shared memory than the GPU has: fla's autotuner never picks it). The autotuner picks
    one config per machine (a shape was right on one machine and wrong on the next), so each is forced in turn (with
    one config Triton's autotuner runs it without timing)."""
    import itertools

    from triton.runtime.errors import OutOfResources

    from retnet.retention import log_decay

    fla_fn, why = chunk_mod._fla_chunk_simple_gla()
    assert fla_fn is not None, why
    dev = torch.device(device)
    g = torch.Generator(device=dev).manual_seed(0)
    B, T, H = 2, 256, 2
    q, k = (torch.randn(B, T, H, dk, device=dev, dtype=torch.bfloat16, generator=g) * dk**-0.5 for _ in range(2))
    v, do = (torch.randn(B, T, H, dv, device=dev, dtype=torch.bfloat16, generator=g) for _ in range(2))
    lam = log_decay(H, "paper").to(dev)

    def run(kernel: str) -> tuple[torch.Tensor, ...]:
        x = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
        if kernel == "torch":
            o, _ = chunk_mod.chunk_retention(*x, lam, kernel="torch")
        else:
            o, _ = fla_fn(*x, g_gamma=lam.float(), scale=1.0)
        o.backward(do)
        return (o, *(t.grad for t in x))

    ref = run("torch")
    tuners = [_tuner("chunk_bwd_kernel_dqkwg"), _tuner("chunk_bwd_kernel_dv")]
    for pair in itertools.product(*(list(t.configs) for t in tuners)):
        for tuner, cfg in zip(tuners, pair):
            tuner.configs = [cfg]
        line = {name: [cfg.num_warps, cfg.num_stages] for name, cfg in zip(("dqk_cfg", "dv_cfg"), pair)}
        try:
            line.update({n: _rms_ratio(a, b) for n, a, b in zip(("o", "dq", "dk", "dv"), run("fla"), ref)})
        except OutOfResources as exc:
            line["cannot_launch"] = str(exc)[:120]
        print("CONFIG " + json.dumps(line), flush=True)


def _in_children(shapes: list[tuple[int, int]], record: Path, deadline_s: float) -> dict[tuple, tuple[list, str]]:
    """Each shape in its own process, all at once (a wrong kernel may also fault, which poisons a CUDA context; each
    shape compiles and autotunes for minutes on a fresh machine), all within one deadline. Each child's output goes
    to `record`/DKxDV.out and .err as it runs, so what finished survives a kill. Per shape: the configs' errors and
    the fault ("" when none)."""
    record.mkdir(parents=True, exist_ok=True)
    files = {s: (record / f"{s[0]}x{s[1]}.out", record / f"{s[0]}x{s[1]}.err") for s in shapes}
    procs = {}
    for s, (out, err) in files.items():
        with open(out, "w") as fo, open(err, "w") as fe:
            procs[s] = subprocess.Popen([sys.executable, __file__, *map(str, s)], stdout=fo, stderr=fe)
    end = time.monotonic() + deadline_s
    try:
        for p in procs.values():
            try:
                p.wait(timeout=max(1.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass  # its fault reads "timeout" below
    finally:  # a timeout (ours or pytest's) must not leave children on the GPU
        for p in procs.values():
            p.kill()
    return {s: _child_result(out, err, procs[s].poll()) for s, (out, err) in files.items()}


def _child_result(out: Path, err: Path, rc: int | None) -> tuple[list, str]:
    """One child's configs (its CONFIG lines) and its fault ("" when it ended well), from its output files."""
    configs = [json.loads(line[7:]) for line in out.read_text().splitlines() if line.startswith("CONFIG ")]
    fault = "" if rc == 0 and configs else f"rc {rc} ({'timeout' if rc is None or rc < 0 else 'failed'}): " \
        + err.read_text()[-1500:]
    return configs, fault


def _judge(results: dict[tuple, tuple[list, str]], refusing: bool) -> list[str]:
    """What contradicts the rule in a record: an allowed shape wrong under a config pair that launched, faulting, or
    with no pair launched; a refused shape right under every pair. Where the rule refuses nothing (`refusing` False:
    another GPU or Triton), the REFUSED shapes are allowed there and judged as allowed ones. A refused shape's fault
    counts as evidence only if it is an illegal memory access (a timeout or an unrelated crash is not)."""
    right = lambda e: math.isfinite(e) and e <= BF16_RMS  # noqa: E731 - a NaN (garbage in dq, dk) is never right
    wrong = lambda e: not math.isfinite(e) or e > 10 * BF16_RMS  # noqa: E731
    grads, problems = ("o", "dq", "dk", "dv"), []
    for s in ALLOWED + ([] if refusing else REFUSED):
        configs, fault = results[s]
        launched = [c for c in configs if "cannot_launch" not in c]
        if fault or not launched or not all(right(c[n]) for c in launched for n in grads):
            problems.append(f"allowed {s}: {fault[:300] or launched or 'no config pair launched'}")
    for s in REFUSED if refusing else []:
        configs, fault = results[s]
        launched = [c for c in configs if "cannot_launch" not in c]
        if "illegal memory access" not in fault and not any(wrong(c[n]) for c in launched for n in grads):
            problems.append(f"refused {s} right under every config pair (fault: {fault[:300]!r})")
    return problems


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU: the harness's failure path (on a GPU the child runs)")
def test_the_children_harness_records_a_failing_child(tmp_path):
    """A child that fails (here: no CUDA device) is a fault with its stderr, and its output files stay."""
    results = _in_children([(8, 8)], tmp_path, deadline_s=120)
    configs, fault = results[(8, 8)]
    assert configs == [] and fault.startswith("rc 1 (failed)") and "Error" in fault
    assert (tmp_path / "8x8.err").read_text()


@needs_fla_gpu
@pytest.mark.timeout(450)
def test_fla_is_right_where_allowed_and_wrong_where_refused_under_every_config(tmp_path):
    """Allowed shapes must be right under every pair of configs of fla's two backward kernels that can launch; each
    refused shape must be wrong under at least one, or fault with an illegal memory access: else the refusal has
    outlived the bug (a new Triton or fla). See _judge. On a GPU or Triton the refusal does not cover, every shape must
    be right (there fla runs them). FLA_DIMS_RECORD names a folder that keeps the children's output (the device mode
    `fla-dims` sets it). In each child the 2-warp configs run first (the autotuner's order)."""
    assert all(chunk_kernel_available("fla", "cuda", s)[0] for s in ALLOWED)
    refusing = not chunk_kernel_available("fla", "cuda", REFUSED[0])[0]
    assert all(chunk_kernel_available("fla", "cuda", s)[0] != refusing for s in REFUSED)
    record = Path(os.environ.get("FLA_DIMS_RECORD", tmp_path))
    results = _in_children(ALLOWED + REFUSED, record, deadline_s=400)
    print(json.dumps({str(s): r for s, r in results.items()}))  # the record: -s shows it
    problems = _judge(results, refusing)
    assert not problems, "\n".join(problems)


# The GPU test's record from the H200 (session 13, call 2): every config pair per shape. Replayed on a CPU, it keeps
# the rule and the evidence together: a rule that allowed a shape measured wrong, or refused one measured right under
# every pair, fails here without a GPU.
H200_RECORD = Path(__file__).resolve().parents[1] / "results/reference/h200/2026-11-29-probes-s13/fla-dims-call2"


def _replayed(record: Path) -> dict[tuple, tuple[list, str]]:
    out = {}
    for s in ALLOWED + REFUSED:
        o, e = record / f"{s[0]}x{s[1]}.out", record / f"{s[0]}x{s[1]}.err"
        out[s] = _child_result(o, e, 1 if e.exists() and e.read_text().strip() else 0)
    return out


def test_the_h200_record_agrees_with_the_rule(hopper_with_buggy_triton):
    assert all(chunk_kernel_available("fla", "cuda", s)[0] for s in ALLOWED)
    assert not any(chunk_kernel_available("fla", "cuda", s)[0] for s in REFUSED)
    results = _replayed(H200_RECORD)
    assert _judge(results, refusing=True) == []
    assert "illegal memory access" in results[(16, 128)][1]  # the one fault, a real one


def test_the_judge_finds_a_record_that_contradicts_the_rule(tmp_path):
    """The same record with one allowed shape made wrong, one refused shape made right, and a timeout standing in
    for the evidence of another: three problems."""
    results = _replayed(H200_RECORD)
    bad = dict(results)
    configs, _ = results[(64, 64)]
    bad[(64, 64)] = ([{**configs[0], "dq": 0.5}] + configs[1:], "")
    bad[(32, 64)] = ([{**c, "dq": 0.003, "dk": 0.003} for c in results[(32, 64)][0]], "")
    bad[(64, 32)] = ([], "rc None (timeout): ")
    problems = _judge(bad, refusing=True)
    assert len(problems) == 3 and "allowed (64, 64)" in problems[0], problems
    assert any("refused (32, 64)" in p for p in problems) and any("refused (64, 32)" in p for p in problems)
    # where the rule refuses nothing (another Triton), the H200's wrong shapes would be allowed: each is a problem
    problems = _judge(results, refusing=False)
    assert len(problems) == len(REFUSED) and all(p.startswith("allowed") for p in problems), problems


if __name__ == "__main__":
    _fla_against_torch_per_config(*map(int, sys.argv[1:3]), *sys.argv[3:4])  # DK DV [DEVICE]
