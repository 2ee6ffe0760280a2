"""The one model cache: rungs loaded on demand, kept while a stage's next job needs them.

A worker process (or a Ray task) runs many jobs in a row; the jobs that hold the same models
should load them once. `models_for(profile)` is this process's cache for a profile: `get` loads a
rung (its base or tuned weights) the first time, `keep` drops those the next job does not need,
and `loads` counts what was loaded, for the stage's report.
"""

from __future__ import annotations

from collections.abc import Iterable

from fsgen.models.profiles import Profile, load_rung


class ModelCache:
    """Rungs of one profile as loaded models, keyed by (rung name, tuned)."""

    def __init__(self, profile: Profile):
        self.profile, self.models, self.tokenizer = profile, {}, None
        self.loads = 0  # models loaded so far

    def get(self, name: str, tuned: bool = False):
        key = (name, tuned)
        if key not in self.models:
            model, tokenizer = load_rung(self.profile.rung(name), self.profile, tuned=tuned)
            self.models[key], self.tokenizer = model, self.tokenizer or tokenizer
            self.loads += 1
        return self.models[key]

    def keep(self, needed: Iterable[tuple[str, bool]]) -> None:
        """Drop every model not in `needed` ((name, tuned) keys)."""
        needed = set(needed)
        for key in list(self.models):
            if key not in needed:
                del self.models[key]


_CACHES: dict[tuple[str, str], ModelCache] = {}  # this process's caches, by profile


def models_for(profile: Profile) -> ModelCache:
    """This process's cache of `profile`'s rungs (one per profile name and models folder)."""
    key = (profile.name, str(profile.models_dir))
    if key not in _CACHES or _CACHES[key].profile != profile:
        _CACHES[key] = ModelCache(profile)
    return _CACHES[key]


def release_models() -> None:
    """Forget every cached model of this process (after a stage, so its memory is freed)."""
    _CACHES.clear()
