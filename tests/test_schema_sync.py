"""The report layer reads rows through the one row contract (suites/contract.py) and stays torch-free.

reports/ used to mirror the row columns; now it imports them from `retnet_bench.suites.contract`, which imports
no torch. This checks, in a fresh interpreter, that importing the report layer (and touching its lazy entry
points) loads neither torch nor any torch-heavy suites module.
"""
import subprocess
import sys

from retnet_bench.reports import compare, load
from retnet_bench.suites import contract


def test_reports_read_rows_through_the_contract():
    assert load.ROW_COLUMNS is contract.ROW_COLUMNS and load.NUMERIC_COLUMNS is contract.NUMERIC_COLUMNS
    assert load.read_rows is contract.read_rows and compare.read_rows is contract.read_rows
    assert set(compare.VARIANT_COLUMNS) <= set(contract.POINT_KEY)


def test_importing_reports_imports_no_torch_and_no_heavy_suites_module():
    code = ("import sys, retnet_bench.reports as r, retnet_bench.reports.compare as c; "
            "r.write_report, r.claims_table, c.compare_runs, c.render_github; "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'retnet.', 'triton')) or "
            "(m.startswith('retnet_bench.suites.') and m != 'retnet_bench.suites.contract') or "
            "m.startswith('retnet_bench.baselines')]; "
            "print(sorted(bad)); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "retnet_bench.suites.contract" in subprocess.run(
        [sys.executable, "-c", "import sys, retnet_bench.reports; print(list(sys.modules))"],
        capture_output=True, text=True, timeout=120).stdout
