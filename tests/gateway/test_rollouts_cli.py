"""`kvserve rollout`: the commands of docs/operations.md run as written against a real
gateway, and the config snippet there is a valid gateway config."""

from __future__ import annotations

import re
import shlex
from dataclasses import fields
from pathlib import Path

import yaml

from kvserve.cli.main import main
from kvserve.cli.rollout import THRESHOLD_FLAGS
from kvserve.control.rollout import Thresholds
from kvserve.gateway.config import parse_config
from tests.helpers import free_port

from .conftest import ADMIN_KEY, fast_config

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def section() -> str:
    return DOC.read_text().split("## Rollouts and automatic rollback", 1)[1].split("\n## ", 1)[0]


def rollout_commands() -> list[list[str]]:
    block = section().split("<!-- rollout:begin -->", 1)[1].split("<!-- rollout:end -->", 1)[0]
    (commands,) = re.findall(r"```bash\n(.*?)```", block, flags=re.S)
    return [shlex.split(line) for line in commands.splitlines() if line.strip()]


def test_the_config_snippet_is_a_valid_gateway_config():
    (snippet,) = re.findall(r"```yaml\n(.*?)```", section(), flags=re.S)
    config = parse_config(yaml.safe_load(re.sub(r"(?m)^   ", "", snippet)))
    assert config.rollouts.tick_s == 1 and config.rollouts.registry == "/srv/models"
    assert {name: v.weight for name, v in config.models["chat"].versions.items()} == {"v1": 100, "v2": 0}


def test_the_rollout_commands_run_as_written(upstream, gateway, tmp_path, monkeypatch, capsys):
    a, b = upstream(name="a"), upstream(name="b")
    models = {"chat": {"versions": {"v1": {"weight": 100, "pool": {"endpoints": [a.url]}},
                                    "v2": {"weight": 0, "pool": {"endpoints": [b.url]}}}}}
    gw = gateway(fast_config(models, rollouts={"registry": str(tmp_path / "registry")}))
    monkeypatch.chdir(tmp_path)
    Path("admin.key").write_text(ADMIN_KEY + "\n")
    outputs = []
    for command in rollout_commands():
        assert command[:2] == ["kvserve", "rollout"]
        assert main([*command[1:], "--gateway", gw.url]) == 0, command
        outputs.append(capsys.readouterr().out)
    start, status, paused, resumed, aborted = outputs
    assert start.startswith("chat: v1 -> v2 running at step 1 of 3 (5% -> 25% -> 50%, 300 s each); "
                            "weights v1 95%, v2 5%")
    assert status.startswith("chat: v1 -> v2 running at step 1 of 3")
    assert "paused at step 1" in paused and "reason: checking a report" in paused
    assert "running at step 1" in resumed
    assert "rolled_back at step 1" in aborted and "weights v1 100%, v2 0%" in aborted
    rollout = gw.state.rollouts.get("chat")
    assert rollout.plan.thresholds.min_requests == 200 and rollout.tag is not None and rollout.tag.ref == "chat:v2"
    assert [e["event"] for e in rollout.events] == ["started", "paused", "resumed", "rolled_back"]


def test_refusals_and_unreachable_gateways_exit_1_with_the_reason(upstream, gateway, tmp_path, capsys):
    a, b = upstream(name="a"), upstream(name="b")
    models = {"chat": {"versions": {"v1": {"pool": {"endpoints": [a.url]}}, "v2": {"pool": {"endpoints": [b.url]}}}}}
    gw = gateway(fast_config(models))
    base = ["--gateway", gw.url, "--admin-key", ADMIN_KEY]
    assert main(["rollout", "pause", "chat", *base]) == 1
    assert "HTTP 404: model 'chat' has no rollout" in capsys.readouterr().err
    assert main(["rollout", "start", "chat", "--from", "v1", "--to", "v2", "--steps", "50,20", *base]) == 1
    assert "steps must increase" in capsys.readouterr().err
    assert main(["rollout", "start", "chat", "--from", "v1", "--to", "v2", "--steps", "five", *base]) == 1
    assert "--steps takes percentages" in capsys.readouterr().err
    assert main(["rollout", "status", "--gateway", gw.url, "--admin-key", "wrong"]) == 1
    assert "HTTP 401" in capsys.readouterr().err
    assert main(["rollout", "status", "--gateway", f"http://127.0.0.1:{free_port()}", "--admin-key", "k"]) == 1
    assert "error:" in capsys.readouterr().err
    assert main(["rollout", "status", *base]) == 0 and capsys.readouterr().out == "no rollouts\n"
    assert main(["rollout", "start", "chat", "--from", "v1", "--to", "v2", "--json", *base]) == 0
    assert '"phase": "running"' in capsys.readouterr().out


def test_every_threshold_has_a_flag_and_the_quality_flags_reach_the_gateway(upstream, gateway):
    assert {field for field, _, _ in THRESHOLD_FLAGS.values()} == {f.name for f in fields(Thresholds)}
    a, b = upstream(name="a"), upstream(name="b")
    models = {"chat": {"versions": {"v1": {"weight": 100, "pool": {"endpoints": [a.url]}},
                                    "v2": {"weight": 0, "pool": {"endpoints": [b.url]}}}}}
    gw = gateway(fast_config(models, shadow={"models": {"chat": {"candidate": "v2"}}}, feedback={"enabled": True}))
    command = ["rollout", "start", "chat", "--from", "v1", "--to", "v2", "--min-shadow-similarity", "0.85",
               "--min-exact-match-rate", "0.9", "--min-feedback-score", "0.6", "--min-similarity-samples", "50",
               "--admin-key", ADMIN_KEY, "--gateway", gw.url]
    assert main(command) == 0
    t = gw.state.rollouts.get("chat").plan.thresholds
    assert (t.min_shadow_similarity, t.min_exact_match_rate, t.min_feedback_score) == (0.85, 0.9, 0.6)
    assert (t.min_similarity_samples, t.min_exact_match_samples) == (50, 20)
