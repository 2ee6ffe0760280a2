"""What code a stage runs, read from the imports: resume fingerprints and DVC deps rely on it."""

from __future__ import annotations

import pytest

from fsgen.core.source import code_fingerprint, fsgen_imports, module_closure


def test_imports_and_attributes_name_their_modules():
    code = (
        "import fsgen\n"
        "from fsgen.models import llm_to_slm\n"
        "from fsgen import read_metrics\n"
        "from fsgen.analysis.frequency import frequency_table\n"
        "import fsgen.analysis.scaling as scaling\n"
        "profile = fsgen.load_profile('embedded')\n"
        "import numpy\n"
    )
    assert fsgen_imports(code) == {
        "models.llm_to_slm",
        "core.io",
        "analysis.frequency",
        "analysis.scaling",
        "models.profiles",
    }


def test_closure_follows_imports_and_stops_there():
    closure = module_closure(["stages.token_logging"])
    assert {"stages.token_logging", "core.shards", "data.tasks", "data.sandbox"} <= closure
    assert not {"analysis.frequency", "analysis.scaling", "models.llm_to_slm"} & closure


def test_fingerprint_is_stable_and_depends_on_the_closure():
    logging = code_fingerprint(["stages.token_logging"])
    assert logging == code_fingerprint(["stages.token_logging"])
    assert logging != code_fingerprint(["analysis.frequency"])
    assert code_fingerprint(["stages.token_logging", "core.shards"]) == logging


def test_unknown_module_is_a_clear_error():
    with pytest.raises(ValueError, match="no fsgen module 'nope'"):
        module_closure(["nope"])
