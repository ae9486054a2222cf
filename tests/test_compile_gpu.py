"""compile = "blocks" with the GPU kernels (fla's chunk retention, the Triton rotation and read-out, SDPA): Dynamo
breaks the graph at those custom autograd functions and Inductor compiles what lies between them. The compiled
model must compute what the eager one computes: its loss and gradient as close to the fp32 reference as the eager
bf16 model's. The CPU twin (test_training.py) checks the engine path with the torch kernels."""
from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the fused kernels under compile")

KERNELS = {"retnet": "fla", "transformer": "sdpa"}


def _loss_and_grad(family: str, compile: str, dtype: torch.dtype = torch.bfloat16,
                   device: torch.device = torch.device("cuda", 0),
                   kernel: str | None = None) -> tuple[float, torch.Tensor]:
    """The "small" model on `device`, one forward + backward on fixed ids: the loss and one block's output-projection
    gradient (inside the compiled region)."""
    from retnet_bench.suites.training.recipe import ModelRecipe, build_model, model_forward
    from retnet_bench.suites.training.step import apply_compile, next_token_loss

    recipe = ModelRecipe(family, "small", kernel=kernel or KERNELS[family], overrides={"vocab_size": 512})
    torch.manual_seed(0)
    model = build_model(recipe, device, dtype, dtype)
    apply_compile(model, compile)
    ids = torch.randint(0, 512, (1, 1025), device=device, generator=torch.Generator(device).manual_seed(1))
    loss = next_token_loss(model_forward(model, recipe, ids[:, :-1], 256), ids[:, 1:])
    loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "layers.1." in n and p.grad is not None and p.dim() == 2]
    return loss.item(), torch.cat([g.float().flatten() for g in grads]).cpu()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("family", ["retnet", "transformer"])
def test_compiled_blocks_with_the_fused_kernels_compute_the_eager_step(family):
    import torch._dynamo

    torch._dynamo.utils.counters.clear()  # process-wide: an earlier test's graphs must not count here
    compiled_loss, compiled_grad = _loss_and_grad(family, "blocks")
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # something was compiled
    loss, grad = _loss_and_grad(family, "none")
    _, exact = _loss_and_grad(family, "none", torch.float32)

    def off(g: torch.Tensor) -> float:
        return ((g - exact).norm() / exact.norm()).item()

    print(f"{family}: loss {compiled_loss:.5f} compiled vs {loss:.5f} eager; block gradient off the fp32 reference "
          f"by {off(compiled_grad):.4f} compiled vs {off(grad):.4f} eager")
    assert compiled_loss == pytest.approx(loss, rel=1e-2)
    assert off(compiled_grad) < 2 * off(grad) + 1e-3, (off(compiled_grad), off(grad))
