"""GPU only: one sweep point's memory must not depend on the points measured before it.

Every decode point captures a CUDA graph on a fresh side stream, and cuBLAS keeps a workspace per stream it has run
on (outside torch.cuda.empty_cache's reach). Before the runner cleared those between points, a fig6 sweep carried up
to ~1 GiB of stale workspaces into every later point's torch and NVML peaks."""

import pytest
import torch

from retnet_bench.suites.contestants.spec import BuildArgs, get_spec
from retnet_bench.suites.trackers import free_device_memory as _free

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("impl,kernel", [("retnet-recurrent", "triton"), ("static", "sdpa-math")])
def test_graph_points_leave_no_memory_behind(impl, kernel):
    device = torch.device("cuda", torch.cuda.current_device())
    spec = get_spec(impl)
    c = spec.build(spec, BuildArgs("tiny", kernel, device, torch.bfloat16, use_graph=True))
    allocated = []
    for _ in range(5):  # five points = five captures on five different side streams
        c.prefill(2, 64)
        c.begin_decode()
        c.step()
        c.end()
        _free(device)
        allocated.append(torch.cuda.memory_allocated(device))
    c.close()
    assert max(allocated) == min(allocated), [a - allocated[0] for a in allocated]
