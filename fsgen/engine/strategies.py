"""Decoding strategies: how one step of the engine's loop turns logits into tokens.

The loop (`fsgen.engine.collaborate.decode_batch`) is the same for every method:

    strategy.prefill(batch, output)
    while not output.all_done():
        strategy.step(batch, output)
    strategy.finish(batch, output)

and never asks which strategy it runs, in the manner of transformers' `CandidateGenerator`:

- `TokenLevel`: combine and route. System 1 proposes; where the router consults the large
  model, the method's rule combines the logits (oracle, contrastive, proxy tuning, ...).
- `Speculative`: draft and verify. System 1 drafts k tokens, the large model verifies them in
  one forward.
- `TeacherForced`: the oracle's fast path. The large model generates alone, then every small
  model is teacher-forced over the generated tokens in one forward each, so one generation
  serves a whole ladder of small models.

Every tensor of a step stays on the models' device; only chosen ids, the router's decisions and
the trace's k statistics per row cross to the host.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from fsgen.engine.batch import Batch
from fsgen.engine.forward import Stream
from fsgen.engine.methods import LogitView, Method
from fsgen.engine.output import Output
from fsgen.engine.routers import Router
from fsgen.engine.sampler import Sampler
from fsgen.engine.trace import STAT_FIELDS, host_stats


def stat_record(prefix: str, stats: Mapping[str, np.ndarray] | None, row: int) -> dict:
    """Trace fields of one model's distribution for one row (nulls when not consulted)."""
    if stats is None:
        return {f"{prefix}_{f}": None for f in STAT_FIELDS}
    return {
        f"{prefix}_top1_prob": float(stats["top1_prob"][row]),
        f"{prefix}_entropy": float(stats["entropy"][row]),
        f"{prefix}_margin": float(stats["margin"][row]),
        f"{prefix}_topk_ids": stats["topk_ids"][row].tolist(),
        f"{prefix}_topk_probs": stats["topk_probs"][row].tolist(),
    }


def consult_rows(router: Router, probs: torch.Tensor) -> torch.Tensor:
    """The router's decisions on System 1's probabilities (B, V), checked: (B,) bools."""
    decided = router(probs)
    rows = probs.shape[0]
    if not isinstance(decided, torch.Tensor) or decided.dtype != torch.bool:
        kind = decided.dtype if isinstance(decided, torch.Tensor) else type(decided).__name__
        raise ValueError(f"a router must return a bool tensor of shape ({rows},), got {kind}")
    if tuple(decided.shape) != (rows,):
        raise ValueError(
            f"a router must return a bool tensor of shape ({rows},), got {tuple(decided.shape)}"
        )
    return decided.to(probs.device)


# ----------------------------------------------------------------------------- combine and route


@dataclass
class TokenLevel:
    """One token per step: System 1 proposes, the router picks rows for the large model, and the
    method's rule combines their logits there. `large` and `base` are None when unused."""

    method: Method
    router: Router
    sampler: Sampler
    system1: Stream
    large: Stream | None = None
    base: Stream | None = None
    alpha: float = 1.0
    beta: float = 0.5
    trace: bool = True
    system1_is_large: bool = False

    def __post_init__(self):
        self.large_forwards = 0
        self.own_source = "large" if self.system1_is_large else "small"  # an unconsulted token
        self.s: torch.Tensor | None = None
        self.b: torch.Tensor | None = None

    def prefill(self, batch: Batch, output: Output) -> None:
        self.s = self.system1.advance(batch)[:, -1]  # (B, V)
        if self.base is not None:
            self.b = self.base.advance(batch)[:, -1].to(self.s.device)

    def step(self, batch: Batch, output: Output) -> None:
        s = self.s  # (B, V) System 1's next-token logits
        device = s.device
        active = output.active(device)  # (B,)
        consult = torch.zeros_like(active)
        if self.large is not None:
            consult = consult_rows(self.router, torch.softmax(s.double(), -1)) & active
        l = None  # noqa: E741
        called = consult.tolist()
        if any(called):  # the large model catches up on every column since its last call
            l = self.large.advance(batch)[:, -1].to(device)  # noqa: E741
            self.large_forwards += 1
            view = LogitView(s=s, l=l, b=self.b, alpha=self.alpha, beta=self.beta)
            scores = torch.where(consult.unsqueeze(-1), self.method.combine(view), s)  # (B, V)
        else:
            scores = s
        chosen = self.sampler.choose(scores)  # (B,) one draw per row, whoever decides
        self._emit(output, chosen, s, l, called)
        batch.append(chosen.unsqueeze(-1))
        if not output.all_done():
            self.s = self.system1.advance(batch)[:, -1]
            if self.base is not None:
                self.b = self.base.advance(batch)[:, -1].to(device)

    def _emit(self, output: Output, chosen, s, l, called: list[bool]) -> None:  # noqa: E741
        tokens = chosen.tolist()
        mismatch = (chosen != s.argmax(-1)).tolist()
        vs_base = None if self.b is None else (chosen != self.b.argmax(-1)).tolist()
        s_stats = host_stats(s, output.k) if self.trace else None
        l_stats = host_stats(l, output.k) if self.trace and l is not None else None
        for row, token in enumerate(tokens):
            if output.done[row]:
                continue
            record = {
                "source": self.method.source if called[row] else self.own_source,
                "large_called": called[row] or self.system1_is_large,
                "mismatch": called[row] and mismatch[row],
                "mismatch_vs_base": None if vs_base is None else vs_base[row],
            }
            if self.trace and self.system1_is_large:  # alone: its stats in the large columns
                record |= stat_record("small", None, row) | stat_record("large", s_stats, row)
            elif self.trace:
                large_stats = l_stats if called[row] else None
                record |= stat_record("small", s_stats, row) | stat_record(
                    "large", large_stats, row
                )
            output.emit(row, token, record)

    def finish(self, batch: Batch, output: Output) -> dict[str, Output]:
        return {"": output}

    def stats(self) -> dict[str, int]:
        return {"large_forwards": self.large_forwards}


# ----------------------------------------------------------------------------- draft and verify


def accept_greedy(drafts: list[int], targets: list[int]) -> tuple[int, int, str]:
    """Greedy verification of one row: drafts (k) are accepted while they equal the large
    model's argmax at their position (`targets`, k + 1); then the large model's token follows,
    a correction, or a bonus when every draft passed. Returns (accepted, token, source)."""
    k, accepted = len(drafts), 0
    while accepted < k and drafts[accepted] == targets[accepted]:
        accepted += 1
    return accepted, targets[accepted], "bonus" if accepted == k else "large"


def accept_sampled(row: int, p_logits, q_logits, drafts, sampler: Sampler) -> tuple[int, int, str]:
    """Speculative sampling of one row (Leviathan et al. 2023): draft d is accepted with
    probability min(1, p(d) / q(d)), else the token is drawn from norm(max(0, p - q)); after k
    accepted drafts the bonus is drawn from p. `p_logits` (k+1, V), `q_logits` (k, V)."""
    k = len(drafts)
    p, q = sampler.probs(p_logits), sampler.probs(q_logits)  # (k+1, V), (k, V)
    for j in range(k):
        d = int(drafts[j])
        if sampler.uniform(row) < min(1.0, float(p[j, d] / q[j, d])):
            continue
        residual = (p[j] - q[j]).clamp(min=0)
        residual = residual / residual.sum() if residual.sum() > 0 else p[j]
        return j, sampler.draw(row, residual), "large"
    return k, sampler.draw(row, p[k]), "bonus"


@dataclass
class Speculative:
    """Draft `num_draft` tokens with System 1, verify them in one forward of the large model.
    Drafts that every running row rejected are cropped from the caches; the rest are masked."""

    sampler: Sampler
    small: Stream
    large: Stream
    num_draft: int
    trace: bool = True

    def __post_init__(self):
        self.rounds = 0
        self.large_calls = 0

    def prefill(self, batch: Batch, output: Output) -> None:
        """Nothing ahead of the first round: each round feeds what the models have not seen."""

    def step(self, batch: Batch, output: Output) -> None:
        k = self.num_draft
        self.rounds += 1
        active = output.active()  # (B,) on the host: verification is per row
        self.large_calls += int(active.sum())  # verification rounds per running row
        start = batch.width - 1  # column of the last emitted token
        q_logits, drafts = [], []
        for _ in range(k):
            q = self.small.advance(batch)[:, -1]  # (B, V), feeding whatever it has not seen
            drafts.append(self.sampler.choose(q))
            q_logits.append(q)
            batch.append(drafts[-1].unsqueeze(-1))
        p_all = self.large.advance(batch, keep=k + 1).to(q_logits[0].device)  # (B, k+1, V)
        q_all, d_all = torch.stack(q_logits, 1), torch.stack(drafts, 1)  # (B, k, V), (B, k)
        if self.sampler.do_sample:
            verdicts = [
                accept_sampled(r, p_all[r], q_all[r], d_all[r], self.sampler)
                for r in range(len(d_all))
            ]
        else:
            targets = p_all.argmax(-1).tolist()  # (B, k+1)
            verdicts = [accept_greedy(d, t) for d, t in zip(d_all.tolist(), targets, strict=True)]
        self._record(output, active.tolist(), verdicts, d_all, q_all, p_all)
        accepted = torch.tensor([v[0] for v in verdicts])  # (B,)
        # drop rejected drafts: crop what every running row rejected, mask the rest per row
        rejected = torch.where(active, k - accepted, torch.full_like(accepted, k))
        common = int(rejected.min())
        if common:
            batch.crop(batch.width - common)
            self.small.crop(batch.width)
            self.large.crop(batch.width)
        for row in range(len(d_all)):
            if active[row] and rejected[row] > common:
                batch.mask_out(row, start + 1 + int(accepted[row]))
        batch.append(torch.tensor([[v[1]] for v in verdicts], device=batch.device))

    def _record(self, output: Output, active, verdicts, d_all, q_all, p_all) -> None:
        """Emit each running row's accepted drafts and final token, with their trace rows."""
        k = d_all.shape[1]
        q_stats = host_stats(q_all.flatten(0, 1), output.k) if self.trace else None
        p_stats = host_stats(p_all.flatten(0, 1), output.k) if self.trace else None
        drafted = d_all.tolist()
        for row, (accepted, token, source) in enumerate(verdicts):
            if not active[row]:
                continue
            taken = output.accept(row, drafted[row][:accepted] + [token])
            if not taken:
                continue
            final = [j == accepted for j in range(taken)]
            frame = {
                "prompt_id": output.prompt_ids[row],
                "step": range(len(output.tokens[row]) - taken, len(output.tokens[row])),
                "token_id": output.tokens[row][-taken:],
                "source": [source if f else "draft" for f in final],
                "large_called": True,
                "mismatch": [f and source == "large" for f in final],
                "mismatch_vs_base": None,
            }
            if self.trace:  # no small distribution for a bonus token
                for name, values in q_stats.items():
                    frame[f"small_{name}"] = [
                        values[row * k + j] if j < k else None for j in range(taken)
                    ]
                for name, values in p_stats.items():
                    frame[f"large_{name}"] = [values[row * (k + 1) + j] for j in range(taken)]
            output.add_rows(pd.DataFrame(frame))

    def finish(self, batch: Batch, output: Output) -> dict[str, Output]:
        return {"": output}

    def stats(self) -> dict[str, int]:
        return {"large_forwards": self.rounds, "large_calls": self.large_calls}


# ----------------------------------------------------------------------------- teacher forcing


@dataclass
class TeacherForced:
    """The oracle with every step consulted, greedy: the large model generates alone (through
    `alone`, a `TokenLevel` of the large model), then `finish` teacher-forces each model of
    `smalls` ({name: model}) over the generated tokens in one forward and scores its
    agreement. `open_stream(model, batch)` gives each small model its stream."""

    alone: TokenLevel
    smalls: Mapping[str, object]
    open_stream: object

    def prefill(self, batch: Batch, output: Output) -> None:
        self.prompt = batch.copy()
        self.steps = 0
        self.alone.prefill(batch, output)

    def step(self, batch: Batch, output: Output) -> None:
        self.steps += 1
        self.alone.step(batch, output)

    def finish(self, batch: Batch, output: Output) -> dict[str, Output]:
        """One `Output` per small model: the large model's tokens with its oracle trace rows."""
        width = self.prompt.width
        generated = batch.seq[:, width:]  # (B, n), n >= 1: every row emitted at least once
        n = generated.shape[1]
        token_ids = generated.flatten().cpu().numpy()  # (B*n,)
        kept = [len(t) for t in output.tokens]
        keep = np.concatenate([np.arange(r * n, r * n + t) for r, t in enumerate(kept)])  # flat
        if self.alone.trace:  # the large model's statistics, in (prompt, step) order
            large_rows = pd.DataFrame(output.rows).sort_values(["prompt_id", "step"], kind="stable")
        results = {}
        for name, small in self.smalls.items():
            scored = self.prompt.copy(spare=n)
            scored.append(generated)
            stream = self.open_stream(small, scored)
            logits = stream.advance(scored, keep=n + 1)[:, :-1]  # (B, n, V): before each token
            flat = logits.flatten(0, 1)  # (B*n, V)
            mismatch = token_ids != flat.argmax(-1).cpu().numpy()  # (B*n,)
            scored_output = Output(
                output.tokenizer,
                output.prompt_ids,
                output.rule,
                output.k,
                output.done,
                output.keep_rows,
            )
            scored_output.tokens = [list(t) for t in output.tokens]
            frame = {
                "prompt_id": np.repeat(output.prompt_ids, kept),
                "step": keep % n,
                "token_id": token_ids[keep],
                "source": "large",
                "large_called": True,
                "mismatch": mismatch[keep],
                "mismatch_vs_base": None,
            }
            if self.alone.trace:
                for stat, values in host_stats(flat, output.k).items():
                    frame[f"small_{stat}"] = list(values[keep]) if values.ndim > 1 else values[keep]
                for stat in STAT_FIELDS:
                    frame[f"large_{stat}"] = large_rows[f"large_{stat}"].to_numpy()
            scored_output.add_rows(pd.DataFrame(frame))
            results[name] = scored_output
        return results

    def stats(self) -> dict[str, int]:
        return {"large_forwards": self.steps}
