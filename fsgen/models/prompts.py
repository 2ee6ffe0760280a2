"""The prompts a profile asks its tasks in: one rule for every stage that decodes.

A profile in the `few_shot` style (the papers') asks in the tasks' plain few-shot prompts, and its
tuned models (proxy tuning) in the chat format; one in the `chat` style (an instruction-tuned
model's own format) asks every method the question alone, as the user's turn of the tokenizer's
chat template."""

from __future__ import annotations

from collections.abc import Sequence

from transformers import AutoTokenizer

from fsgen.core.paths import resolve
from fsgen.data.tasks import build_prompts
from fsgen.models.profiles import Profile


def profile_prompts(
    profile: Profile,
    task: str,
    examples: Sequence,
    *,
    data_dir=None,
    tokenizer=None,
    tuned: bool = False,
) -> list[str]:
    """`examples`' prompts as `profile` asks them (`tuned`: for a method that runs a tuned
    model); a chat prompt without `tokenizer` uses the profile's largest rung's."""
    zero_shot = profile.prompt_style == "chat"
    chat = zero_shot or tuned
    if chat and tokenizer is None:
        source = profile.rungs[-1].model
        local = resolve(source)
        tokenizer = AutoTokenizer.from_pretrained(local if local.exists() else source)
    return build_prompts(
        task,
        examples,
        data_dir=data_dir,
        chat=chat,
        tokenizer=tokenizer if chat else None,
        zero_shot=zero_shot,
    )
