"""Reports of runs over several GPUs (FSDP2): a scaling run holds one contestant at several world sizes, whose
tokens/s are totals; Table 4, its bars and the scaling figure must keep them apart and say per GPU."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from reports_fixtures import train_row, write_run  # noqa: E402

from retnet_bench.reports import figures as F  # noqa: E402
from retnet_bench.reports import load_runs  # noqa: E402
from retnet_bench.reports.figure_style import FASTEST_SETTING  # noqa: E402
from retnet_bench.reports.tables import all_tables  # noqa: E402


def _oom(model: str, impl: str, kernel: str, **extra) -> dict:
    return dict(train_row(model, impl, kernel, 1, 8192, 1.0, None, **extra), status="oom", error="OOM",
                tokens_per_s=None, ms_median=None)


def test_one_point_on_one_and_on_two_gpus_is_two_table4_lines(tmp_path):
    """A report of a scaling run holds the same contestant at several world sizes: each is its own Table 4 line
    (one used to replace the other), with tokens/s of all GPUs and per GPU; one GPU throughout has no per-GPU column.
    Sizes run in size order (13b after 2.7b, not before)."""
    one = [train_row("1.3b", "retnet-chunkwise", "fla", 1, 8192, 44000.0, 32.0)]
    two = [train_row("1.3b", "retnet-chunkwise", "fla", 1, 8192, 78000.0, 26.0, world_size=2,
                     tokens_per_s_per_gpu=39000.0),
           train_row("13b", "retnet-chunkwise", "fla", 1, 8192, 9600.0, 102.0, world_size=2,
                     tokens_per_s_per_gpu=4800.0),
           train_row("2.7b", "retnet-chunkwise", "fla", 1, 8192, 46000.0, 41.0, world_size=2,
                     tokens_per_s_per_gpu=23500.0)]  # per GPU as the row says (its ranks' own), not total / 2
    runs = [write_run(tmp_path, one, run_id="x1"), write_run(tmp_path, two, run_id="x2")]
    t4 = {t.name: t for t in all_tables(*load_runs(runs))}["table4_training"]
    assert t4.df.loc[("1.3b", "retnet-chunkwise (fla)"), ["tokens/s", "tokens/s per GPU"]].tolist() == [44000.0] * 2
    assert t4.df.loc[("1.3b", "retnet-chunkwise (fla), 2 GPUs"), ["tokens/s", "tokens/s per GPU"]].tolist() == [
        78000.0, 39000.0]
    assert "memory: per GPU" in t4.note
    assert list(t4.df.index.get_level_values("size")) == ["1.3b", "1.3b", "2.7b", "13b"]  # not "13b" < "2.7b"
    assert t4.df.loc[("2.7b", "retnet-chunkwise (fla), 2 GPUs"), "tokens/s per GPU"] == 23500.0
    alone = {t.name: t for t in all_tables(*load_runs(runs[:1]))}["table4_training"]
    assert "tokens/s per GPU" not in alone.df and "per GPU" not in alone.note


def test_table4_bars_take_the_world_size_that_covers_the_most_sizes(tmp_path):
    """A scaling run's report holds 1.3B on one GPU and every size on two: the bars show the two-GPU points (their
    tokens/s the total of both, as the axis says), not the lone one-GPU size; an oom point counts as covered."""
    rows = [train_row("1.3b", "retnet-chunkwise", "fla", 1, 8192, 44000.0, 32.0),
            train_row("1.3b", "transformer", "flash-attn", 1, 8192, 43000.0, 30.0)]
    rows += [train_row(m, impl, k, 1, 8192, tps, 40.0, world_size=2, tokens_per_s_per_gpu=tps / 2)
             for m, tps in (("1.3b", 78000.0), ("2.7b", 46000.0))
             for impl, k in (("retnet-chunkwise", "fla"), ("transformer", "flash-attn"))]
    rows += [_oom("13b", "retnet-chunkwise", "fla", world_size=2),
             train_row("13b", "retnet-chunkwise", "fla", 1, 8192, 9600.0, 120.0, world_size=2, checkpointing="full")]
    df, envs = load_runs([write_run(tmp_path, rows)])
    fig = F.build_figures(df, envs)[0]["table4_training_bars"]
    assert "2 GPUs" in fig._suptitle.get_text()
    # the plain 13B step was oom: its checkpointed step is the tick over the OOM stub
    ticks = [c for c in fig.axes[1].collections if c.get_label() == FASTEST_SETTING]
    assert [t.get_segments()[0][0][1] for t in ticks] == [pytest.approx(9600.0)]
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == ["1.3b", "2.7b", "13b"]
    assert fig.axes[1].get_ylabel() == "throughput (tokens/s, all 2 GPUs)"
    assert sorted(round(p.get_height()) for p in fig.axes[1].patches if p.get_height() > 9000) == [
        46000, 46000, 78000, 78000]


def test_an_oom_only_world_size_does_not_take_the_bars(tmp_path):
    """Two GPUs 'cover' more sizes than one here, but only with oom rows: the bars stay on the GPU count that has a
    bar (the figure once raised on an empty frame and the whole report with it)."""
    rows = [train_row("1.3b", "retnet-chunkwise", "fla", 1, 8192, 44000.0, 32.0),
            _oom("6.7b", "retnet-chunkwise", "fla", world_size=2), _oom("13b", "retnet-chunkwise", "fla", world_size=2)]
    fig = F.build_figures(*load_runs([write_run(tmp_path, rows)]))[0]["table4_training_bars"]
    assert "one GPU" in fig._suptitle.get_text()
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == ["1.3b"]


def test_a_setting_without_any_plain_row_gets_no_tick(tmp_path):
    """A checkpointed step is ticked over its plain bar or its plain OOM stub; with neither (2.7B measured only
    checkpointed, beside the Transformer's plain bar) there is nothing under the tick, so none is drawn."""
    rows = [train_row("1.3b", "retnet-chunkwise", "fla", 1, 8192, 44000.0, 32.0),
            train_row("2.7b", "transformer", "flash-attn", 1, 8192, 23000.0, 40.0),
            train_row("2.7b", "retnet-chunkwise", "fla", 1, 8192, 20000.0, 40.0, checkpointing="full")]
    fig = F.build_figures(*load_runs([write_run(tmp_path, rows)]))[0]["table4_training_bars"]
    assert [c for c in fig.axes[1].collections if c.get_label() == FASTEST_SETTING] == []


def test_table4_says_how_much_of_a_step_the_gpu_computed_and_what_communication_stood_alone(tmp_path):
    """gpu_compute_ms over the median step as a percentage (below 100: the GPU waited for the host or a collective);
    exposed communication only where a row ran on several GPUs; rows from before the columns show neither."""
    # 8192 tokens at 40960 tok/s: a 200 ms step
    rows = [train_row("1.3b", "retnet-chunkwise", "fla", 1, 8192, 40960.0, 32.0, gpu_compute_ms=180.0,
                      exposed_comm_ms=0.0),
            train_row("1.3b", "retnet-chunkwise", "fla", 2, 8192, 81920.0, 26.0, world_size=2,  # one sequence a GPU
                      tokens_per_s_per_gpu=40960.0, gpu_compute_ms=170.0, exposed_comm_ms=25.0)]
    t4 = {t.name: t for t in all_tables(*load_runs([write_run(tmp_path, rows, run_id="a")]))}["table4_training"]
    assert t4.df.loc[("1.3b", "retnet-chunkwise (fla)"), "GPU compute % of step"] == pytest.approx(90.0)
    assert t4.df.loc[("1.3b", "retnet-chunkwise (fla), 2 GPUs"), ["GPU compute % of step", "exposed comm ms"]
                     ].tolist() == pytest.approx([85.0, 25.0])
    assert "waited for the host or a collective" in t4.note and "exposed comm ms" in t4.note
    one_gpu = {t.name: t for t in all_tables(*load_runs([write_run(tmp_path / "b", rows[:1], run_id="b")]))}
    assert "exposed comm ms" not in one_gpu["table4_training"].df
    old = [train_row("1.3b", "retnet-chunkwise", "fla", 1, 8192, 40960.0, 32.0)]
    before = {t.name: t for t in all_tables(*load_runs([write_run(tmp_path / "c", old, run_id="c")]))}
    assert "GPU compute % of step" not in before["table4_training"].df and "waited" not in before["table4_training"].note
    assert "T=256 step % of step" not in before["table4_training"].df


def test_table4_says_how_long_a_short_step_takes_against_the_step(tmp_path):
    """short_step_ms (the same model at T=256) over the median step: near 100% the host sets the pace."""
    rows = [train_row("1.3b", "retnet-chunkwise", "fla", 1, 8192, 40960.0, 32.0, gpu_compute_ms=180.0,
                      short_step_ms=190.0),  # a 200 ms step
            train_row("1.3b", "transformer", "sdpa-cudnn", 1, 8192, 40960.0, 32.0, gpu_compute_ms=190.0)]
    t4 = {t.name: t for t in all_tables(*load_runs([write_run(tmp_path, rows, run_id="a")]))}["table4_training"]
    assert t4.df.loc[("1.3b", "retnet-chunkwise (fla)"), "T=256 step % of step"] == pytest.approx(95.0)
    assert math.isnan(t4.df.loc[("1.3b", "transformer (sdpa-cudnn)"), "T=256 step % of step"])  # none measured
    assert "the host's time to issue a step" in t4.note


def test_two_kernels_of_retnet_scale_in_two_colours_and_their_labels_do_not_overlap(tmp_path):
    """fla and fla-graphs at one and two GPUs (session 17's report drew both in the subject's red, and the %
    labels of close points over each other): each kernel its own colour, the kernel with the most rows keeping the
    subject's red, and the labels of one world size at least the figure's gap apart."""
    from retnet_bench.reports.figure_style import SUBJECT_COLOUR

    rows = []
    for kernel, one, two in (("fla", 45000.0, 43500.0), ("fla-graphs", 45100.0, 43600.0)):
        rows += [train_row("1.3b", "retnet-chunkwise", kernel, 1, 8192, one, 32.0),
                 train_row("1.3b", "retnet-chunkwise", kernel, 1, 8192, 2 * two, 25.0, world_size=2,
                           tokens_per_s_per_gpu=two)]
    rows += [train_row("2.7b", "retnet-chunkwise", "fla", 1, 8192, 23800.0, 56.0),  # fla: the most rows
             train_row("1.3b", "transformer", "sdpa-cudnn", 1, 8192, 44900.0, 30.0),
             train_row("1.3b", "transformer", "sdpa-cudnn", 1, 8192, 2 * 43400.0, 23.0, world_size=2,
                       tokens_per_s_per_gpu=43400.0)]
    df, envs = load_runs([write_run(tmp_path, rows)])
    ax = F.build_figures(df, envs)[0]["scaling"].axes[0]
    colours = {ln.get_label(): ln.get_color() for ln in ax.get_lines() if not ln.get_label().startswith("ideal")}
    assert colours["retnet-chunkwise (fla)"] == SUBJECT_COLOUR
    assert len(set(colours.values())) == 3, colours
    ys = sorted(t.xy[1] for t in ax.texts)
    assert len(ys) == 3 and min(b - a for a, b in zip(ys, ys[1:])) >= 0.05 * ax.get_ylim()[1] - 1e-6, ys


def test_the_scaling_figure_shows_every_run_of_a_point_beside_the_latest(tmp_path):
    """Two runs of RetNet over two GPUs (a slow and a normal draw, as in session 17): the line takes the latest run,
    and each run is a dot at that world size, so the spread between runs is in the figure; one run alone gets none."""
    from retnet_bench.reports.figures_train import EVERY_RUN_LABEL

    one = [train_row("1.3b", "retnet-chunkwise", "fla", 1, 8192, 45000.0, 32.0)]
    draw = lambda per_gpu, hour: [train_row("1.3b", "retnet-chunkwise", "fla", 1, 8192, 2 * per_gpu, 25.0,  # noqa
                                            world_size=2, tokens_per_s_per_gpu=per_gpu,
                                            timestamp=f"2025-01-02T{hour}:00:00+00:00")]
    runs = [write_run(tmp_path, one, run_id="x1"), write_run(tmp_path, draw(38000.0, 10), run_id="x2-a"),
            write_run(tmp_path, draw(44000.0, 11), run_id="x2-b")]

    def scaling_axes(dirs):
        df, envs = load_runs(dirs)
        return F.build_figures(df, envs, load_runs(dirs, latest=False)[0])[0]["scaling"].axes[0]

    ax = scaling_axes(runs)
    line = next(ln for ln in ax.get_lines() if ln.get_label() == "retnet-chunkwise (fla)")
    assert list(line.get_ydata()) == [45000.0, 44000.0]  # the latest run
    dots = sorted(y for c in ax.collections if c.get_label() == "_nolegend_" for _, y in c.get_offsets())
    assert dots == [38000.0, 44000.0, 45000.0]  # its one-GPU point too: every run of the contestant
    assert EVERY_RUN_LABEL in [c.get_label() for c in ax.collections]
    single = scaling_axes(runs[:1] + runs[2:])
    assert not [c for c in single.collections if c.get_label() in ("_nolegend_", EVERY_RUN_LABEL)]
