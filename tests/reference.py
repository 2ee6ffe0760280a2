"""Naive references: batch 1, no KV cache, every step recomputes the whole prefix.

Written independently of the engine's batching, caching and bookkeeping; they share only the
methods' combination rules and the routers, which are the definitions under test elsewhere.
"""

from __future__ import annotations

import torch

from fsgen.engine.methods import LogitView, get_method
from fsgen.engine.routers import make_router


def _logits(model, ids: list[int], vocab: int) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0, -1, :vocab].float()


def _end_ids(tokenizer, models, stop) -> set[int]:
    """End ids: the tokenizer's eos, each model's generation_config eos (int or list), and
    every stop string that is one of the tokenizer's special tokens."""
    ids = {tokenizer.eos_token_id}
    for model in models:
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        ids |= set(eos) if isinstance(eos, list) else {eos}
    specials = set(tokenizer.all_special_tokens)
    ids |= {tokenizer.convert_tokens_to_ids(s) for s in stop or [] if s in specials}
    return ids - {None}


class _Row:
    def __init__(self, tokenizer, max_new_tokens, stop, end_ids):
        self.tokenizer, self.max_new_tokens, self.stop = tokenizer, max_new_tokens, stop or []
        self.end_ids = end_ids
        self.tokens, self.mismatches, self.vs_base, self.calls, self.sources = [], 0, 0, 0, []

    def done(self) -> bool:
        if not self.tokens:
            return False
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=False)
        return (
            len(self.tokens) >= self.max_new_tokens
            or self.tokens[-1] in self.end_ids
            or any(s in text for s in self.stop)
        )


def _choose(scores, do_sample, temperature, generator) -> int:
    if not do_sample:
        return int(scores.argmax())
    probs = torch.softmax(scores.double() / temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator)[0])


def naive_collaborate(
    small,
    large,
    tokenizer,
    prompt,
    *,
    prompt_id=0,
    method="oracle",
    router="always",
    threshold=None,
    small_tuned=None,
    alpha=None,
    beta=None,
    num_draft=5,
    max_new_tokens=16,
    do_sample=False,
    temperature=1.0,
    seed=0,
    stop=None,
) -> dict:
    """One prompt, decoded the slow way. Returns tokens, mismatches, large calls and sources."""
    spec = get_method(method)
    alpha = spec.alpha if alpha is None else alpha
    beta = spec.beta if beta is None else beta
    vocab = len(tokenizer)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    generator = torch.Generator().manual_seed(seed * 1_000_003 + prompt_id)
    models = [m for m in (small, large, small_tuned) if m is not None]
    row = _Row(tokenizer, max_new_tokens, stop, _end_ids(tokenizer, models, stop))
    if method == "speculative":
        return _naive_speculative(
            small, large, prompt_ids, row, vocab, num_draft, do_sample, temperature, generator
        )
    _, rule = make_router(router, threshold)
    system1 = {"large": large, "proxy": small_tuned}.get(method, small)
    while not row.done():
        seq = prompt_ids + row.tokens
        s = _logits(system1, seq, vocab)
        consult = method not in ("small", "large") and bool(
            rule(torch.softmax(s.double(), -1)[None])[0]
        )
        scores, b = s, None
        if method == "proxy":
            b = _logits(small, seq, vocab)
        if consult:
            l = _logits(large, seq, vocab)  # noqa: E741
            scores = spec.combine(
                LogitView(
                    s=s[None], l=l[None], b=None if b is None else b[None], alpha=alpha, beta=beta
                )
            )[0]
        token = _choose(scores, do_sample, temperature, generator)
        row.calls += consult or method == "large"
        row.mismatches += consult and token != int(s.argmax())
        row.vs_base += b is not None and token != int(b.argmax())
        row.sources.append(spec.source if consult else ("large" if method == "large" else "small"))
        row.tokens.append(token)
    return vars(row) | {"tokenizer": None}


def _naive_speculative(small, large, prompt_ids, row, vocab, k, do_sample, temperature, generator):
    while not row.done():
        row.calls += 1
        seq = prompt_ids + row.tokens
        drafts, qs = [], []
        for _ in range(k):
            q = _logits(small, seq + drafts, vocab)
            drafts.append(_choose(q, do_sample, temperature, generator))
            qs.append(q)
        ps = [_logits(large, seq + drafts[:j], vocab) for j in range(k + 1)]
        accepted, token, source = k, None, "bonus"
        for j in range(k):
            if not do_sample:
                if drafts[j] != int(ps[j].argmax()):
                    accepted, token, source = j, int(ps[j].argmax()), "large"
                    break
                continue
            p = torch.softmax(ps[j].double() / temperature, -1)
            q = torch.softmax(qs[j].double() / temperature, -1)
            u = torch.rand(1, generator=generator, dtype=torch.float64).item()
            if u < min(1.0, float(p[drafts[j]] / q[drafts[j]])):
                continue
            residual = (p - q).clamp(min=0)
            residual = residual / residual.sum() if residual.sum() > 0 else p
            accepted, token, source = (
                j,
                int(torch.multinomial(residual, 1, generator=generator)),
                "large",
            )
            break
        if token is None:
            token = _choose(ps[k], do_sample, temperature, generator)
        for j, tok in enumerate(drafts[:accepted] + [token]):
            if row.done():
                break
            row.tokens.append(tok)
            is_final = j == accepted
            row.sources.append(source if is_final else "draft")
            row.mismatches += is_final and source == "large"
    return vars(row) | {"tokenizer": None}


def naive_continue(model, tokenizer, prompt_ids, prefix, *, max_new_tokens, stop=None) -> list:
    """A branch decoded the slow way: `prefix` (generated tokens, the last one put in place),
    then `model`'s greedy tokens, each step recomputing the whole sequence, until the rule that
    stops a generation holds over the whole generation (prefix included)."""
    vocab = len(tokenizer)
    row = _Row(tokenizer, max_new_tokens, stop, _end_ids(tokenizer, [model], stop))
    row.tokens = list(prefix)
    while not row.done():
        row.tokens.append(int(_logits(model, list(prompt_ids) + row.tokens, vocab).argmax()))
    return row.tokens
