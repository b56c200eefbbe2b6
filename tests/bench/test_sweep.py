"""`kvserve bench sweep` against a fake upstream: one line per rate, JSON per rate, the plot."""

from __future__ import annotations

import json

from kvserve.cli.main import main


def test_sweep_prints_one_line_per_rate_and_writes_runs(steady_upstream, tmp_path, capsys):
    result_file = tmp_path / "sweep.json"
    code = main(["bench", "sweep", "--base-url", steady_upstream, "--model", "m", "--request-rates", "10,inf",
                 "--num-prompts", "6", "--input-len", "8", "--output-len", "4", "--no-progress",
                 "--slo", "ttft=5", "--result-file", str(result_file), "--plot"])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.lstrip().startswith("rate"))
    rows = [line.split() for line in lines[header + 1 : header + 3]]
    assert [row[0] for row in rows] == ["10", "inf"] and all(row[1] == "6/6" for row in rows)
    assert all(row[-1] == row[2] for row in rows)  # every request met the loose SLO: goodput == req/s
    doc = json.loads(result_file.read_text())
    assert [run["request_rate"] for run in doc["runs"]] == [10.0, "inf"]
    assert all(run["summary"]["completion_tokens"] == 24 for run in doc["runs"])
    assert (tmp_path / "sweep-throughput-latency.png").stat().st_size > 0


def test_sweep_uses_a_fresh_workload_per_rate(fake_upstream, tmp_path, capsys):
    url = fake_upstream("--num-tokens", "2", "--tokens-per-second", "0")
    code = main(["bench", "sweep", "--base-url", url, "--model", "m", "--request-rates", "inf,inf",
                 "--num-prompts", "3", "--input-len", "40", "--no-progress", "--result-file", str(tmp_path / "s.json")])
    assert code == 0
    runs = json.loads((tmp_path / "s.json").read_text())["runs"]
    # the fake counts prompt tokens as characters / 4: different random words, different totals
    assert runs[0]["summary"]["prompt_tokens"] != runs[1]["summary"]["prompt_tokens"]


def test_empty_rate_list_is_a_usage_error(capsys):
    assert main(["bench", "sweep", "--model", "m", "--request-rates", ","]) == 2
    assert "at least one rate" in capsys.readouterr().err
