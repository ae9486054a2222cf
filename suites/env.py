"""What machine and software a run was measured on (written to env.json)."""
from __future__ import annotations

import datetime as _dt
import os
import importlib.metadata as md
import platform
import socket
import subprocess
import sys
from pathlib import Path

import torch

from .contract import SCHEMA_VERSION, measure_changing, set_among, with_prefix

_PACKAGES = {
    "torch": "torch", "transformers": "transformers", "flash_attn": "flash-attn", "flash_attn_4": "flash-attn-4",
    "fla": "flash-linear-attention", "torchscale": "torchscale", "triton": "triton", "pynvml": "nvidia-ml-py",
    "retnet_bench": "retnet-bench",
}


# Recorded when set, after the variables that change what a run measures (the contract's measure_changing).
RUNTIME_ENV = ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "TORCH_SYMM_MEM_DISABLE_MULTICAST", "NVSHMEM_DISABLE_NVLS")
# and every NCCL_* variable: they choose how multi-GPU rows' collectives run (protocol, algorithm, transport), so a
# reader needs them; they are not measure-changing for `compare`, since one-GPU runs, where NCCL does nothing, would
# then refuse each other over NCCL_NVLS_ENABLE=0 (set on the lent multi-GPU machines, and by device_reference.sh)
RUNTIME_ENV_PREFIXES = ("NCCL_",)


def runtime_env() -> dict[str, str]:
    """The measure-changing, RUNTIME_ENV and RUNTIME_ENV_PREFIXES variables that are set, with their values."""
    return {**measure_changing(os.environ), **set_among(os.environ, RUNTIME_ENV),
            **with_prefix(os.environ, RUNTIME_ENV_PREFIXES)}


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty). A copy of the tree shipped to a GPU machine names its commit in RETNET_BENCH_GIT_SHA (and
    RETNET_BENCH_GIT_DIRTY); that wins over git, because such a copy may carry a stale .git (one device tool copies
    the .git of the session's first checkout)."""
    if os.environ.get("RETNET_BENCH_GIT_SHA"):
        return os.environ["RETNET_BENCH_GIT_SHA"], _env_flag("RETNET_BENCH_GIT_DIRTY")
    sha = _git("rev-parse", "HEAD")
    return sha, (bool(_git("status", "--porcelain", "--untracked-files=no")) if sha else None)


def _env_flag(name: str) -> bool | None:
    """'true'/'1'/'yes' -> True, 'false'/'0'/'no' -> False, unset or anything else -> None (unknown)."""
    value = os.environ.get(name, "").strip().lower()
    return True if value in ("1", "true", "yes") else False if value in ("0", "false", "no") else None


def available_ram_gb(meminfo: Path = Path("/proc/meminfo")) -> float | None:
    """MemAvailable from /proc/meminfo in GB (1e9 bytes): what a CPU run can allocate before the kernel's OOM killer
    ends it without a word (exit 137). None where there is no such file (not Linux) or it says nothing readable."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                value, unit = line.split()[1:3]
                return int(value) * {"kB": 1024, "mB": 1024**2, "gB": 1024**3}.get(unit, 1) / 1e9
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine_identity(boot_id: Path = Path("/proc/sys/kernel/random/boot_id"),
                     cpuinfo: Path = Path("/proc/cpuinfo")) -> dict:
    """Which machine and boot a run ran on, and its host CPU: runs on one lease share a boot_id, and a step that is
    host-bound moves with the host CPU (RetNet's training step: 2026-11-29-probes-s11). None where unreadable."""
    out: dict = {"boot_id": None, "cpu_model": None}
    try:
        out["boot_id"] = boot_id.read_text().strip() or None
    except OSError:
        pass
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                out["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except (OSError, IndexError):
        pass
    return out


def gpu_info(device: torch.device) -> dict:
    info: dict = {"gpu_name": None, "gpu_uuid": None, "gpu_count": 0, "driver": None, "cuda": torch.version.cuda,
                  "gpu_memory_gb": None}
    if device.type != "cuda":
        return info
    props = torch.cuda.get_device_properties(device)
    info.update(gpu_name=props.name, gpu_count=torch.cuda.device_count(), gpu_memory_gb=props.total_memory / 1e9,
                sm_count=props.multi_processor_count, capability=f"{props.major}.{props.minor}")
    uuid = getattr(props, "uuid", None)  # this physical GPU (two leases of one machine kind can differ)
    info["gpu_uuid"] = str(uuid) if uuid is not None else None
    try:
        import pynvml

        pynvml.nvmlInit()
        info["driver"] = pynvml.nvmlSystemGetDriverVersion()
    except Exception as e:  # recorded, not fatal: torch numbers still stand
        info["driver"] = f"unavailable ({type(e).__name__})"
    return info


def collect_env(device: torch.device) -> dict:
    git_sha, git_dirty = _git_state()
    env = {
        "schema_version": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_sha": git_sha,
        "git_dirty": git_dirty,
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_threads": torch.get_num_threads(),
        "device": device.type,
        "command": " ".join(sys.argv),
        "runtime_env": runtime_env(),
    }
    env.update(machine_identity())
    env.update(gpu_info(device))
    env["versions"] = {k: _version(v) for k, v in _PACKAGES.items()}
    return env
