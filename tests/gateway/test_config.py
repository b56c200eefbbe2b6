"""Gateway config: the documented example loads, bad files name the field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kvserve.gateway.config import ConfigError, GatewayConfig, load_config, parse_config

DOCS = Path(__file__).resolve().parents[2] / "docs" / "gateway.md"


def docs_example() -> str:
    blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), re.S)
    assert blocks, "docs/gateway.md has no yaml example"
    return next(b for b in blocks if "shedding:" in b)  # the full example, not the quick start


def test_the_full_example_in_the_docs_loads(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text(docs_example())
    config = load_config(path)
    chat = config.models["chat"]
    assert [v for v in chat.versions] == ["v1", "v2"]
    assert chat.versions["v1"].weight == 95 and chat.versions["v2"].upstream_model == "Qwen3-8B-ft"
    assert chat.versions["v1"].pool.endpoints[1].api_key == "upstream-secret"
    assert chat.versions["v1"].long_prompt.threshold_tokens == 4096
    assert config.models["chat-small"].versions["default"].pool.policy == "session_affinity"
    assert config.admin.resolved_key() == "change-me"


def test_every_field_in_the_docs_example_is_a_real_field(tmp_path):
    # extra="forbid" everywhere: a typo or a stale field in the docs would fail the load
    assert GatewayConfig.model_config["extra"] == "forbid"
    path = tmp_path / "g.yaml"
    path.write_text(docs_example().replace("queue_threshold", "queue_treshold"))
    with pytest.raises(ConfigError, match=r"shedding\.queue_treshold"):
        load_config(path)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda c: c["models"]["m"]["pool"].update(policy="fastest"), r"models\.m\.pool\.policy.*unknown policy 'fastest'"),
        (lambda c: c["models"]["m"]["pool"].update(endpoints=["ftp://x"]), r"models\.m\.pool\.endpoints\.0\.url"),
        (lambda c: c.update(retry={"max_attempts": 0}), r"retry\.max_attempts"),
        (lambda c: c.update(scrape={"interval_s": "fast"}), r"scrape\.interval_s"),
        (lambda c: c["models"].update({"a@b": {"pool": {"endpoints": []}}}), r"models.*cannot contain '@'"),
        (lambda c: c.update(models={}), r"models"),
    ],
)
def test_a_bad_field_is_named_in_the_error(mutate, field):
    config = {"models": {"m": {"pool": {"endpoints": ["http://127.0.0.1:1"]}}}}
    mutate(config)
    with pytest.raises(ConfigError, match=field):
        parse_config(config, "gw.yaml")


def test_missing_file_and_bad_yaml_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(bad)


def test_pool_shorthand_is_one_default_version_and_urls_may_be_strings():
    config = parse_config({"models": {"m": {"upstream_model": "up", "pool": {"endpoints": ["http://h:1/"]}}}})
    version = config.models["m"].versions["default"]
    assert version.upstream_model == "up"
    assert version.pool.endpoints[0].url == "http://h:1"  # trailing slash dropped


def test_admin_key_file_is_read_and_an_unreadable_one_is_an_error(tmp_path):
    key = tmp_path / "key"
    key.write_text("s3cret\n")
    path = tmp_path / "g.yaml"
    path.write_text(f"admin: {{key_file: {key}}}\nmodels: {{m: {{pool: {{endpoints: []}}}}}}\n")
    assert load_config(path).admin.resolved_key() == "s3cret"
    key.unlink()
    with pytest.raises(ConfigError, match="admin.key_file"):
        load_config(path)
