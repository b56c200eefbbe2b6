"""The parity matrix on the CPU (torch backend, float32): every case of tests/models/parity.py."""

import pytest

from tests.models.parity import CASES, build_case, check_case, reference_tokens


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_matches_transformers(case, tmp_path):
    model_dir = build_case(case, tmp_path / case.name)
    llm = check_case(model_dir, case, reference_tokens(model_dir), kv_cache_gib=0.01)
    llm.shutdown()
