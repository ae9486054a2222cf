"""What the Triton kernel tests share: run on CUDA when there is a GPU, else under the Triton interpreter.

The interpreter is chosen when triton is first imported, so on a CPU each kernel test file has one wrapper test that
re-runs the file's kernel tests in a child process with TRITON_INTERPRET=1 (the kernels of a process that already
imported triton normally cannot be interpreted).
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from retnet.kernels import triton_available

CUDA = torch.cuda.is_available()
INTERPRETED = triton_available() and os.environ.get("TRITON_INTERPRET") == "1"
DEV = "cuda" if CUDA else "cpu"
runs_kernels = pytest.mark.skipif(
    not (triton_available() and (CUDA or INTERPRETED)),
    reason="Triton kernels need CUDA or TRITON_INTERPRET=1 (the CPU wrapper test below sets it in a child process)",
)
interpreter_wrapper = pytest.mark.skipif(
    CUDA or INTERPRETED or not triton_available(),
    reason="CPU wrapper: runs the kernel tests above under TRITON_INTERPRET=1 (needs triton installed; on a GPU they "
           "run directly)",
)


def run_under_interpreter(test_file: str, selection: str, timeout_s: int = 900) -> None:
    """Run the tests of `test_file` picked by the -k expression `selection` in a child process under the Triton
    interpreter; fails unless they ran and passed (none skipped)."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", test_file,
                           "-k", selection], env=env, capture_output=True, text=True, timeout=timeout_s)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout.splitlines()[-1], proc.stdout[-2000:]
