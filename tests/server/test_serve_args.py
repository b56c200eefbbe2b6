"""`kvserve serve` flags and --config YAML map onto EngineConfig and ServerSettings."""

from __future__ import annotations

import argparse

import pytest

from kvserve.cli.engine_args import add_engine_args, engine_config_from_args
from kvserve.cli.serve import configs_from_args, register
from kvserve.config import ConfigError, EngineConfig


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["serve", *argv])


def test_every_engine_setting_has_a_flag():
    parser = argparse.ArgumentParser()
    add_engine_args(parser)
    dests = {action.dest for action in parser._actions}
    assert set(EngineConfig.setting_names()) <= dests


def test_flags_map_onto_engine_and_server_settings():
    args = _parse("--model", "/m", "--served-model-name", "alias", "--max-num-seqs", "8", "--kv-cache-gib", "0.5",
                  "--no-enable-prefix-caching", "--port", "9000", "--api-key", "k", "--request-timeout", "2.5")
    engine, server = configs_from_args(args)
    assert engine.model.model == "/m" and engine.model.served_model_name == "alias"
    assert engine.scheduler.max_num_seqs == 8 and engine.cache.kv_cache_gib == 0.5
    assert engine.cache.enable_prefix_caching is False
    assert (server.port, server.api_key, server.request_timeout, server.host) == (9000, "k", 2.5, "127.0.0.1")


def test_yaml_config_with_flags_winning(tmp_path):
    config = tmp_path / "serve.yaml"
    config.write_text("max-num-seqs: 4\nblock_size: 32\nport: 7000\nlog_requests: true\n")
    engine, server = configs_from_args(_parse("--config", str(config), "--max-num-seqs", "16"))
    assert engine.scheduler.max_num_seqs == 16 and engine.cache.block_size == 32
    assert server.port == 7000 and server.log_requests is True


@pytest.mark.parametrize("content", ["block_size: 7\n", "max_num_seqs: '4'\n", "nonsense: 1\n", "- a list\n",
                                     "port: 70000\n"])
def test_bad_config_files_raise_config_error(tmp_path, content):
    config = tmp_path / "serve.yaml"
    config.write_text(content)
    with pytest.raises(ConfigError):
        configs_from_args(_parse("--config", str(config)))


def test_hardening_flags_map_onto_server_settings():
    _, server = configs_from_args(_parse("--max-header-bytes", "4096", "--max-headers", "20", "--header-timeout", "2.5",
                                         "--allow-special-tokens-in-content"))
    limits = server.header_limits()
    assert (limits.max_bytes, limits.max_count, limits.read_timeout_s) == (4096, 20, 2.5)
    assert server.allow_special_tokens_in_content is True
    _, default = configs_from_args(_parse())
    assert default.allow_special_tokens_in_content is False and default.header_limits().max_bytes == 65536


@pytest.mark.parametrize("flags", [("--max-header-bytes", "100"), ("--max-headers", "0"), ("--header-timeout", "0")])
def test_header_limits_out_of_range_are_config_errors(flags):
    with pytest.raises(ConfigError, match="header"):
        configs_from_args(_parse(*flags))


def test_engine_args_alone_build_an_engine_config():
    parser = argparse.ArgumentParser()
    add_engine_args(parser)
    assert engine_config_from_args(parser.parse_args([])) == EngineConfig()


def test_arch_is_a_flag_and_a_yaml_key_and_excludes_model(tmp_path):
    engine, _ = configs_from_args(_parse("--arch", "qwen3-0.6b", "--max-model-len", "2048"))
    assert engine.model.arch == "qwen3-0.6b" and engine.model.model is None
    config = tmp_path / "serve.yaml"
    config.write_text("arch: llama3-8b\n")
    assert configs_from_args(_parse("--config", str(config)))[0].model.arch == "llama3-8b"
    with pytest.raises(ConfigError, match="mutually exclusive"):
        configs_from_args(_parse("--arch", "qwen3-0.6b", "--model", "/m"))


def test_serve_refuses_model_with_arch_and_unknown_shapes_before_starting(capsys):
    from kvserve.cli.serve import run

    assert run(_parse("--arch", "qwen3-0.6b", "--model", "/m")) == 2
    assert "model and arch are mutually exclusive" in capsys.readouterr().err
    assert run(_parse("--arch", "qwen9-1t")) == 2
    assert "unknown architecture shape 'qwen9-1t'" in capsys.readouterr().err
