"""What code a stage runs, read from the imports: resume fingerprints and DVC deps rely on it."""

from __future__ import annotations

import pytest

from fsgen.source import code_fingerprint, fsgen_imports, module_closure


def test_imports_and_attributes_name_their_modules():
    code = (
        "import fsgen\n"
        "from fsgen import llm_to_slm, read_metrics\n"
        "from fsgen.frequency import frequency_table\n"
        "import fsgen.scaling as scaling\n"
        "profile = fsgen.load_profile('embedded')\n"
        "import numpy\n"
    )
    assert fsgen_imports(code) == {"llm_to_slm", "io", "frequency", "scaling", "ladder"}


def test_closure_follows_imports_and_stops_there():
    closure = module_closure(["token_logging"])
    assert {"token_logging", "decoding", "shards", "tasks", "sandbox", "source"} <= closure
    assert not {"frequency", "scaling", "llm_to_slm", "report"} & closure


def test_fingerprint_is_stable_and_depends_on_the_closure():
    assert code_fingerprint(["token_logging"]) == code_fingerprint(["token_logging"])
    assert code_fingerprint(["token_logging"]) != code_fingerprint(["frequency"])
    assert code_fingerprint(["token_logging", "trace"]) == code_fingerprint(["token_logging"])


def test_unknown_module_is_a_clear_error():
    with pytest.raises(ValueError, match="no fsgen module 'nope'"):
        module_closure(["nope"])
