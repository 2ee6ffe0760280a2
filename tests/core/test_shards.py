import pandas as pd
import pytest

from fsgen.core.shards import ShardStore


def _frame(key: str) -> pd.DataFrame:
    return pd.DataFrame({"key": [key] * 3, "value": [1.5, 2.5, 3.5]})


def test_resume_skips_finished_shards_and_merge_is_order_free(tmp_path):
    store = ShardStore(tmp_path / "a")
    keys = ["t=gsm8k+m=oracle+c=001", "t=gsm8k+m=oracle+c=000", "t=mbpp+m=oracle+c=000"]
    for key in keys[:2]:  # a crash after two shards
        store.write(key, _frame(key))
    assert [k for k in keys if not store.done(k)] == keys[2:]
    store.write(keys[2], _frame(keys[2]))
    other = ShardStore(tmp_path / "b")
    for key in reversed(keys):  # the same work, finished in another order
        other.write(key, _frame(key))
    assert store.merge().equals(other.merge())
    assert list(store.merge()["key"].unique()) == sorted(keys)
    for key in keys:
        assert store.path(key).read_bytes() == other.path(key).read_bytes()


def test_no_temporary_files_are_left_behind(tmp_path):
    store = ShardStore(tmp_path)
    store.write("x", _frame("x"))
    assert [p.name for p in tmp_path.iterdir()] == ["x.parquet"]


def test_empty_store_and_bad_keys(tmp_path):
    assert ShardStore(tmp_path / "none").merge().empty
    with pytest.raises(ValueError, match=r"shard keys are .* got '\.\./escape'"):
        ShardStore(tmp_path).path("../escape")
