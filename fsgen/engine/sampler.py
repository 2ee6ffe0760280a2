"""Choosing tokens: greedy, or sampling with one seeded generator per prompt, so results do not
depend on how prompts are batched. Everything runs on the device the scores are on."""

from __future__ import annotations

from collections.abc import Sequence

import torch


class Sampler:
    """Greedy (`do_sample` off) or sampling at `temperature`, one generator per prompt."""

    def __init__(
        self,
        do_sample: bool,
        temperature: float,
        seed: int,
        prompt_ids: Sequence[int],
        device: torch.device | str = "cpu",
    ):
        self.do_sample, self.temperature = do_sample, temperature
        self.generators = [
            torch.Generator(device=device).manual_seed(seed * 1_000_003 + i) for i in prompt_ids
        ]

    def probs(self, scores: torch.Tensor) -> torch.Tensor:
        """Sampling probabilities of scores (..., V), in double precision."""
        return torch.softmax(scores.double() / self.temperature, dim=-1)

    def choose(self, scores: torch.Tensor) -> torch.Tensor:
        """One token per row from scores (B, V) -> (B,)."""
        if not self.do_sample:
            return scores.argmax(-1)
        probs = self.probs(scores)  # (B, V)
        return torch.stack(
            [
                torch.multinomial(p, 1, generator=g)[0]
                for p, g in zip(probs, self.generators, strict=True)
            ]
        )

    def draw(self, row: int, probs: torch.Tensor) -> int:
        """One token from `probs` (V,) with row `row`'s generator."""
        return int(torch.multinomial(probs, 1, generator=self.generators[row]))

    def uniform(self, row: int) -> float:
        """One uniform draw in [0, 1) from row `row`'s generator."""
        generator = self.generators[row]
        return torch.rand(
            1, generator=generator, dtype=torch.float64, device=generator.device
        ).item()
