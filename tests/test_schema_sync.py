"""reports/ mirrors the row schema because it must not import suites/ (torch); keep the two from drifting."""
from retnet_bench.reports import load
from retnet_bench.suites import schema


def test_reports_row_columns_mirror_the_runner_schema():
    assert load.ROW_COLUMNS == schema.ROW_COLUMNS
    assert set(load.NUMERIC_COLUMNS) <= set(schema.ROW_COLUMNS)
