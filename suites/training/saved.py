"""What a training forward keeps for backward: every tensor autograd saves, attributed to the module that saved it.

A training step's activation memory is what the forward saves for backward (plus the logits). This census answers
"where does one model's training memory go, per token and layer" by counting storage, not tensors: views of one
storage (a fused projection's q|k|v slices) are counted once, under the first module that saved any of them,
because it is the storage that stays allocated. Parameters and views of them (including FSDP2's unsharded, cast
copies, read when their module runs) are weights, not activations, and are skipped.

    with SavedTensorCensus(model) as census:
        loss = forward_and_loss(...)
    census.by_module()          # {"layers.1.retention.qkvg": bytes, ...}
    census.block_entries(1)     # what layer 1 saved: [(module, shape, dtype, bytes), ...]
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle


def _is_weight(t: torch.Tensor) -> bool:
    """A parameter or a view of one."""
    return isinstance(t, nn.Parameter) or isinstance(t._base, nn.Parameter)


@dataclass(frozen=True)
class SavedEntry:
    module: str  # qualified name of the innermost module running when the tensor was saved ("" = the root)
    shape: tuple[int, ...]
    dtype: torch.dtype
    nbytes: int  # bytes of the tensor's storage (0 when that storage was already counted)


class SavedTensorCensus:
    """Context manager: while active, records each tensor autograd saves with the innermost running module."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.entries: list[SavedEntry] = []
        self._names = {m: n for n, m in model.named_modules()}
        # running modules, innermost last, each with the storages of its own parameters as they are at that moment
        self._stack: list[tuple[str, set[tuple[torch.device, int]]]] = []
        self._seen: set[tuple[torch.device, int]] = set()
        self._handles: list[RemovableHandle] = []
        self._hooks: torch.autograd.graph.saved_tensors_hooks | None = None

    def _push(self, module: nn.Module, *_: object) -> None:
        # read when the module runs: FSDP2's unsharded (cast) parameters exist only from its pre-forward hook on, and
        # are freed after the block, so their addresses are reused by later activations (hence no global set)
        params = {(p.device, p.untyped_storage().data_ptr()) for p in module.parameters(recurse=False)}
        self._stack.append((self._names.get(module, type(module).__name__), params))

    def _pop(self, *_: object) -> None:
        self._stack.pop()

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        key = (t.device, storage.data_ptr())
        # parameters and views of them (a linear's transposed weight) are weights, not activations. Not "a leaf that
        # requires grad": a view a custom Function makes of its input inside forward (the fused read-out's o) is one
        if not _is_weight(t) and not any(key in params for _, params in self._stack):
            nbytes = 0 if key in self._seen or storage.data_ptr() == 0 else storage.nbytes()
            self._seen.add(key)
            self.entries.append(SavedEntry(self._stack[-1][0] if self._stack else "", tuple(t.shape), t.dtype, nbytes))
        return t  # saved as is: the census observes, it changes nothing

    def __enter__(self) -> SavedTensorCensus:
        for m in self._names:
            self._handles.append(m.register_forward_pre_hook(self._push))
            self._handles.append(m.register_forward_hook(self._pop, always_call=True))
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._hooks is not None
        self._hooks.__exit__(*exc)
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def total_bytes(self) -> int:
        return sum(e.nbytes for e in self.entries)

    def by_module(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for e in self.entries:
            out[e.module] += e.nbytes
        return dict(out)

    def block_entries(self, layer: int, prefix: str = "layers", shared: bool = False) -> list[SavedEntry]:
        """What block `layer` saved (names under `{prefix}.{layer}`): the storages it counted, or with shared=True
        the tensors whose storage was already counted (views of a storage saved earlier), which add no bytes."""
        head = f"{prefix}.{layer}"
        return [e for e in self.entries
                if bool(e.nbytes) != shared and (e.module == head or e.module.startswith(head + "."))]
