"""stack.yaml: what `kvserve up` accepts, the errors it gives, and the gateway config it writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvserve.control.stack_config import StackConfigError, load_stack
from kvserve.control.stack_files import StackFiles
from kvserve.gateway.config import ConfigError, load_config


def write(tmp_path, text: str):
    path = tmp_path / "stack.yaml"
    path.write_text(text)
    return path


def test_a_small_file_gets_defaults_and_paths_next_to_it(tmp_path):
    (tmp_path / "model").mkdir()
    config = load_stack(write(tmp_path, "model: {path: model}\n"))
    assert config.run_dir == tmp_path / ".kvserve"
    assert config.model.path == str(tmp_path / "model") and config.model.name == "chat"
    assert config.initial_replicas() == 1 and not config.autoscale.enabled
    policy = load_stack(write(tmp_path, "model: {path: m}\nreplicas: {min: 0, max: 3}\n"
                                        "autoscale: {enabled: true, cooldown_s: 5}\n")).policy()
    assert (policy.min_replicas, policy.max_replicas, policy.cooldown_s) == (0, 3, 5)


@pytest.mark.parametrize("text, message", [
    ("replicas: {max: 2}\n", "model: Field required"),
    ("model: {path: m}\nreplicas: {min: 3, max: 2}\n", "min (3) is above max (2)"),
    ("model: {path: m}\nreplicas: {mn: 1}\n", "replicas.mn: Extra inputs are not permitted"),
    ("model: {path: m, args: ['--port', '9']}\n", "--port is set by `kvserve up` itself"),
    ("model: {path: m}\ngateway: {settings: {models: {}}}\n", "models are written by `kvserve up` itself"),
    ("model: {path: m}\nreplicas: {min: 0, initial: 0}\n", "without autoscale.enabled the stack needs at least one replica"),
    ("model: {path: m}\nreplicas: {min: 0}\nautoscale: {enabled: true}\ngateway: {hold_timeout_s: 0}\n",
     "replicas.min 0 needs gateway.hold_timeout_s > 0"),
    ("model: {path: m}\nautoscale: {target_kv_usage: 2}\n", "autoscale.target_kv_usage"),
    ("- a list\n", "expected a mapping"),
    ("model: [unclosed\n", "not valid YAML"),
])
def test_bad_files_name_the_field(tmp_path, text, message):
    with pytest.raises(StackConfigError, match="stack.yaml") as info:
        load_stack(write(tmp_path, text))
    assert message in str(info.value)


def test_a_missing_file_says_so(tmp_path):
    with pytest.raises(StackConfigError, match="cannot read"):
        load_stack(tmp_path / "nope.yaml")


def test_the_gateway_config_it_writes_loads_in_the_gateway(tmp_path):
    config = load_stack(write(tmp_path, "model: {path: m, name: tiny}\nredis: {enabled: true, port: 6400}\n"
                                        "gateway: {port: 9000, hold_timeout_s: 30, settings: {retry: {max_attempts: 2}}}\n"))
    files = StackFiles(config.run_dir)
    key = files.prepare()
    files.write_gateway_config(config)
    gateway = load_config(files.gateway_config)
    assert gateway.server.port == 9000 and gateway.hold.timeout_s == 30 and gateway.retry.max_attempts == 2
    assert gateway.redis.url == "redis://127.0.0.1:6400/0" and list(gateway.models) == ["tiny"]
    assert gateway.admin.resolved_key() == key and oct(files.admin_key.stat().st_mode & 0o777) == "0o600"


def test_bad_gateway_settings_are_refused_before_anything_starts(tmp_path):
    config = load_stack(write(tmp_path, "model: {path: m}\ngateway: {settings: {retry: {max_attempts: 0}}}\n"))
    files = StackFiles(config.run_dir)
    files.prepare()
    with pytest.raises(ConfigError, match="retry.max_attempts"):
        files.write_gateway_config(config)
    assert not files.gateway_config.exists()


def test_the_documented_stack_file_is_valid_and_says_what_the_defaults_are(tmp_path):
    doc = (Path(__file__).resolve().parents[2] / "docs" / "deploy.md").read_text()
    block = doc.split("<!-- stack:begin -->", 1)[1].split("<!-- stack:end -->", 1)[0]
    text = block.split("```yaml\n", 1)[1].split("```", 1)[0]
    documented = load_stack(write(tmp_path, text))
    bare = load_stack(write(tmp_path, "model: {path: ./Qwen3-8B, args: ['--max-model-len', '8192']}\n"))
    # the example spells out the defaults, except what it changes for scale to zero
    assert documented.model_copy(update={"replicas": bare.replicas, "autoscale": bare.autoscale}) == bare
    assert documented.replicas.min == 0 and documented.autoscale.enabled
    assert documented.policy().scale_down_window_s == 300
