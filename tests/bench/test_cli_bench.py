"""`kvserve bench serve` end to end through the command line, against a fake upstream process."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from kvserve.cli.main import main


def test_serve_prints_the_table_and_writes_json_and_plots(steady_upstream, tmp_path, capsys):
    result_file = tmp_path / "run.json"
    code = main(["bench", "serve", "--base-url", steady_upstream + "/v1", "--model", "m", "--num-prompts", "10",
                 "--request-rate", "50", "--input-len", "12", "--output-len", "5", "--max-concurrency", "4",
                 "--endpoint", "/v1/chat/completions", "--result-file", str(result_file), "--plot", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "10 / 10 / 0" in out and "TPOT" in out
    doc = json.loads(result_file.read_text())
    assert doc["summary"]["completion_tokens"] == 50 and len(doc["requests"]) == 10
    assert doc["settings"]["dataset"]["input_len"] == 12 and doc["settings"]["token_counter"] == "words"
    assert doc["settings"]["load"]["max_concurrency"] == 4
    assert (tmp_path / "run-latency-cdf.png").exists() and (tmp_path / "run-tokens-per-s.png").exists()


def test_api_key_never_reaches_the_result_file(steady_upstream, tmp_path, capsys):
    result_file = tmp_path / "run.json"
    assert main(["bench", "serve", "--base-url", steady_upstream, "--model", "m", "--num-prompts", "1",
                 "--api-key", "sk-secret-123", "--no-progress", "--result-file", str(result_file)]) == 0
    text = result_file.read_text()
    assert "sk-secret-123" not in text and json.loads(text)["settings"]["target"]["api_key_set"] is True


def test_token_ids_workload_sends_the_offline_requests(steady_upstream, tmp_path, capsys):
    from kvserve.bench.offline import WORKLOADS, make_requests

    result_file = tmp_path / "ids.json"
    code = main(["bench", "serve", "--base-url", steady_upstream, "--model", "m", "--dataset", "token-ids",
                 "--offline-workload", "smoke", "--vocab-size", "1000", "--ignore-eos", "--no-progress",
                 "--result-file", str(result_file)])
    assert code == 0, capsys.readouterr().out
    doc = json.loads(result_file.read_text())
    expected = make_requests(WORKLOADS["smoke"], 1000, 0)
    assert [(r["sized_prompt_len"], r["max_tokens"]) for r in doc["requests"]] == [(len(p), n) for p, n in expected]
    assert doc["settings"]["dataset"]["num_prompts"] == 8


@pytest.mark.parametrize("flags, message", [
    ([], "needs the served model's vocabulary size (--vocab-size"),
    (["--vocab-size", "10", "--endpoint", "/v1/chat/completions"], "only /v1/completions takes"),
])
def test_token_ids_usage_errors(flags, message, capsys):
    assert main(["bench", "serve", "--model", "m", "--dataset", "token-ids", *flags]) == 2
    assert message in capsys.readouterr().err


def test_non_loopback_host_is_refused_before_anything_is_sent(capsys):
    assert main(["bench", "serve", "--base-url", "http://192.0.2.10:8000", "--model", "m"]) == 2
    assert "--allow-host 192.0.2.10" in capsys.readouterr().err


def test_bad_slo_is_a_usage_error(capsys):
    assert main(["bench", "serve", "--model", "m", "--slo", "latency=1"]) == 2
    assert "SLO" in capsys.readouterr().err


def test_a_run_where_nothing_succeeds_exits_nonzero(fake_upstream, tmp_path, capsys):
    url = fake_upstream("--fail-rate", "1")
    code = main(["bench", "serve", "--base-url", url, "--model", "m", "--num-prompts", "3", "--no-progress",
                 "--result-file", str(tmp_path / "r.json")])
    assert code == 1 and "http_503:server_error=3" in capsys.readouterr().out


def test_the_serving_benchmark_never_imports_torch(steady_upstream, tmp_path):
    script = (
        "import sys\n"
        "from kvserve.cli.main import main\n"
        f"code = main(['bench', 'serve', '--base-url', '{steady_upstream}', '--model', 'm', '--num-prompts', '2',"
        f" '--no-progress', '--plot', '--result-file', r'{tmp_path / 'r.json'}'])\n"
        "assert code == 0, code\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_bench_help_lists_serve_and_sweep(capsys):
    assert main(["bench"]) == 2
    out = capsys.readouterr().out
    assert "serve" in out and "sweep" in out


def test_offline_flags_reach_the_offline_module_untouched(capsys):
    if importlib.util.find_spec("kvserve.bench.offline") is None:
        pytest.skip("kvserve.bench.offline is not part of this tree")
    with pytest.raises(SystemExit) as exc:
        main(["bench", "offline", "--help"])
    assert exc.value.code == 0 and "usage: kvserve bench offline" in capsys.readouterr().out


def test_serve_without_model_loads_the_model_the_server_serves(steady_upstream, tmp_path, capsys):
    result_file = tmp_path / "run.json"
    assert main(["bench", "serve", "--base-url", steady_upstream, "--num-prompts", "2", "--no-progress",
                 "--result-file", str(result_file)]) == 0
    served = __import__("httpx").get(steady_upstream + "/v1/models").json()["data"][0]["id"]
    assert json.loads(result_file.read_text())["settings"]["target"]["model"] == served


def test_serve_without_model_and_no_server_says_to_pass_one(capsys):
    from tests.helpers import free_port

    assert main(["bench", "serve", "--base-url", f"http://127.0.0.1:{free_port()}", "--num-prompts", "1"]) == 2
    assert "pass --model NAME" in capsys.readouterr().err
