#!/usr/bin/env bash
# Install this checkout on a GPU machine that has torch/transformers but no network (e.g. the lent H200):
# the package itself without dependencies, plus any wheels carried in .whl/ (torchscale 0.3.0, fairscale 0.4.0,
# flash-linear-attention + fla-core). Source it: `source scripts/gpu_setup.sh`.
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || return 1 2>/dev/null || exit 1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile .whl/*.whl || return 1 2>/dev/null || exit 1
fi
python3 - <<'PY'
import importlib.metadata as md, torch
names = ["torch", "transformers", "triton", "torchscale", "fairscale", "flash-linear-attention", "nvidia-ml-py"]
print({n: (md.version(n) if any(d.metadata["Name"].lower() == n for d in md.distributions()) else None) for n in names},
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")
PY
