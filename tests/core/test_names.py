import pytest

from fsgen.core.names import name_list


def test_a_list_or_a_comma_separated_string_gives_names():
    assert name_list(["synthetic", " expression "]) == ["synthetic", "expression"]
    assert name_list(("synthetic",)) == ["synthetic"]
    assert name_list("synthetic") == ["synthetic"]  # wrapped, not s, y, n, ...
    assert name_list("synthetic, expression") == ["synthetic", "expression"]


@pytest.mark.parametrize("bad", [[], "", " , ", "a,,b", ["a", ""], ["a", 3], 3, {"a": 1}])
def test_anything_else_is_refused_naming_the_value(bad):
    with pytest.raises(ValueError, match=r"^tasks must be one or more names .* got ") as error:
        name_list(bad, "tasks")
    assert repr(bad) in str(error.value)
