"""ModelsConfig from the `models:` part of a serve config file: what is accepted, and the
message for what is not."""

from __future__ import annotations

import pytest

from kvserve.config import ConfigError
from kvserve.server.models_config import ModelsConfig, ModelSpec


def test_a_full_file_maps_onto_the_config():
    config = ModelsConfig.from_file_values({
        "models": [{"name": "chat", "model": "chat:v3", "pinned": True},
                   {"name": "local", "model": "/srv/tiny", "version": "2026-11-30", "memory-gib": 1.5}],
        "memory_budget_gib": 4, "idle_unload_s": 600, "load_timeout_s": 30, "registry": "/srv/registry"})
    assert config.default_name == "chat"
    assert config.models[1] == ModelSpec("local", "/srv/tiny", version="2026-11-30", memory_gib=1.5)
    assert config.budget_bytes() == 4 * 2**30 and config.models[0].loads_at_start


@pytest.mark.parametrize("values, message", [
    ({"models": []}, "at least one model"),
    ({"models": "chat:v1"}, "must be a list"),
    ({"models": [{"name": "a"}]}, r"models\[0\]: missing model"),
    ({"models": [{"name": "a", "model": "a:1", "pinnd": True}]}, "unknown key.*pinnd"),
    ({"models": [{"name": "a", "model": "a:1"}, {"name": "a", "model": "a:2"}]}, "unique; repeated: a"),
    ({"models": [{"name": "a b", "model": "a:1"}]}, "without spaces"),
    ({"models": [{"name": "a", "model": "a:1", "pinned": "yes"}]}, "`pinned` must be true or false"),
    ({"models": [{"name": "a", "model": "/d", "version": "x\r\ny"}]}, "version must be"),
    ({"models": [{"name": "a", "model": "a:1"}], "memory_budget_gib": 0}, "memory_budget_gib must be a positive"),
    ({"models": [{"name": "a", "model": "a:1"}], "load_timeout_s": True}, "load_timeout_s must be a positive"),
    ({"models": [5]}, r"models\[0\] must be a mapping"),
])
def test_a_bad_file_is_refused_with_a_message_naming_the_problem(values, message):
    with pytest.raises(ConfigError, match=message):
        ModelsConfig.from_file_values(values)
