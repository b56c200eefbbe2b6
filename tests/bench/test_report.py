"""The terminal table, sweep lines and the JSON result document."""

from __future__ import annotations

import json
import math

import pytest

from kvserve.bench.metrics import parse_slo, summarize
from kvserve.bench.report import SWEEP_HEADER, format_table, request_rows, result_document, sweep_line, write_json
from tests.bench.test_metrics import example


def test_table_shows_counts_errors_throughputs_goodput_and_latencies_in_ms():
    table = format_table(summarize(example(), 4.0, parse_slo("ttft=0.3,tpot=0.12")))
    assert "5 / 3 / 2" in table
    assert "http_503:server_error=1, timeout=1" in table
    assert "0.75" in table and "2.25" in table and "11.00" in table  # req/s, out tok/s, total tok/s
    assert "0.25 (1 of 3 met it)" in table
    ttft_row = next(line for line in table.splitlines() if line.startswith("TTFT"))
    assert ttft_row.split() == ["TTFT", "233.33", "200.00", "360.00", "396.00", "3"]


def test_table_flags_requests_without_usage():
    records = example()
    records[0].completion_tokens = None
    assert "no usage reported" in format_table(summarize(records, 4.0))
    assert "no usage reported" not in format_table(summarize(example(), 4.0))


def test_sweep_line_aligns_with_its_header():
    line = sweep_line(math.inf, summarize(example(), 4.0))
    assert len(line) == len(SWEEP_HEADER)
    assert line.split()[:4] == ["inf", "3/5", "0.75", "2.2"]


def test_json_result_is_strict_json_with_inf_as_text(tmp_path):
    doc = result_document({"load": {"request_rate": math.inf}}, summary={"x": 1.5}, requests=request_rows(example()))
    path = write_json(tmp_path / "sub" / "r.json", doc)
    loaded = json.loads(path.read_text(), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert loaded["settings"]["load"]["request_rate"] == "inf"
    assert loaded["kvserve_version"] and loaded["date"]
    assert loaded["requests"][1]["ttft_s"] == pytest.approx(0.4) and loaded["requests"][2]["tpot_s"] is None
    assert loaded["requests"][3]["error"] == "http_503:server_error"
