"""Real training on a real distributed engine (issue #14): FSDP2 over 1..N ranks launched by torch's elastic
launcher, a real optimizer step, per-rank timing and memory, model FLOPs and MFU.

    from retnet_bench.suites.training import ModelRecipe, TrainSettings, run_point
    point = run_point(2, ModelRecipe("retnet", "1.3b"), TrainSettings(seq_len=8192), device_type="cuda")
    row = make_row(**common_columns, **point.row_fields(settings))
"""
from .launch import FAULT_ENV, RankResult, check_nproc, run_distributed
from .mfu import PEAK_BF16_FLOPS, mfu, peak_flops, retnet_train_flops_per_token, transformer_train_flops_per_token
from .recipe import ModelRecipe, build_model, model_forward
from .result import TrainPointResult, run_point, summarize, train_flops_per_token
from .step import TrainSettings, synthetic_batch, train_step

__all__ = [
    "FAULT_ENV", "ModelRecipe", "PEAK_BF16_FLOPS", "RankResult", "TrainPointResult", "TrainSettings", "build_model",
    "check_nproc", "mfu", "model_forward", "peak_flops", "retnet_train_flops_per_token", "run_distributed",
    "run_point", "summarize", "synthetic_batch", "train_flops_per_token", "train_step",
    "transformer_train_flops_per_token",
]
