"""LLM-to-SLM (Bergner et al. 2024): a frozen large model encodes the prompt once, a small model
writes the response.

The large model reads the whole prompt in one parallel forward pass. Its hidden states (the
encoder output of an encoder-decoder model such as T5, or a chosen hidden layer of a decoder-only
model, the last by default) go through a projector (Linear, ReLU, Linear) into the small model's
embedding space, where they are added to the small model's own prompt embeddings (`fusion="add"`,
the paper's choice) or take their place (`fusion="replace"`). The fine-tuned small model then
generates the whole response with its KV cache; the large model never runs again.

Tokenizers. When the two models share a tokenizer, the small model embeds the prompt ids with its
own input embedding. When they differ, the prompt is tokenized by the LARGE model's tokenizer on
both sides, so that large states and small prompt positions line up one to one; the small model
then embeds those (large-vocabulary) prompt ids with a new, trainable table `prompt_embedding`
(large vocabulary x small width, initialised to zeros, so training starts from the projected
large states alone), while response ids are the small tokenizer's and use the small model's own
embedding. Generated text is decoded with the small tokenizer.

Decoding is the engine's (`fsgen.engine.collaborate`): `ConditionedSmall` wraps the small model as an
HF-style causal LM whose prompt columns carry the projected large encoding. The engine tells it
each batch's prompt columns through `condition_on_prompts(batch)` (once per prompt batch, which
is when the large model runs), and every later call locates its columns by the length of the KV
cache it is given (0 without one). So the same wrapper serves a plain generation and System 1 of
`fsgen.collaborate` (oracle, both paths, and speculative decoding).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForTextEncoding, AutoTokenizer

from fsgen.core.io import write_metrics
from fsgen.core.names import name_list
from fsgen.core.paths import resolve
from fsgen.core.plots import save_figure
from fsgen.core.timing import timed
from fsgen.data.tasks import (
    GENERATED,
    accuracy,
    accuracy_interval,
    build_prompts,
    generated_examples,
    get_task,
    load_examples,
    score,
)
from fsgen.engine import fast_neox
from fsgen.engine.batch import Batch, padding_id
from fsgen.engine.collaborate import Collaboration, collaborate_ladder
from fsgen.engine.collaborate import generate as engine_generate
from fsgen.models.profiles import DTYPES, Profile, count_parameters, load_config, load_model
from fsgen.models.train import batch_order, optimize

FUSIONS = ("add", "replace")
CONFIG_FILE = "llm_to_slm.json"
WEIGHTS_FILE = "projector.safetensors"
SMALL_DIR = "small"


# ----------------------------------------------------------------------------- the model


def _layer_count(config) -> int:
    for key in ("num_hidden_layers", "num_layers", "n_layer"):
        if isinstance(getattr(config, key, None), int):
            return getattr(config, key)
    raise ValueError(f"cannot tell how many layers a {type(config).__name__} has")


def _is_encoder(model) -> bool:
    """Whether a large model is used through an encoder: an encoder-decoder model, or an encoder
    alone (such as `T5EncoderModel`, which cannot generate)."""
    return bool(getattr(model.config, "is_encoder_decoder", False)) or not model.can_generate()


def _same_vocabulary(a, b) -> bool:
    return a is b or (len(a) == len(b) and a.get_vocab() == b.get_vocab())


class LLMToSLM(torch.nn.Module):
    """A frozen large encoder, a projector and a small causal LM, fused on prompt positions.

    `large` is a causal LM (its hidden layer `layer` is used; -1, the default, is the final,
    normalised one) or an encoder-decoder model (its encoder: `layer` indexes the encoder's
    hidden states). `large_source` is how to load the large model again (a path or hub id): it is
    what `save_pretrained` records instead of the weights. See the module docstring for how
    prompts are tokenized when `large_tokenizer` and `small_tokenizer` differ.
    """

    def __init__(
        self,
        large,
        small,
        large_tokenizer,
        small_tokenizer,
        *,
        large_source: str = "",
        layer: int = -1,
        fusion: str = "add",
        projector_hidden: int | None = None,
        seed: int = 0,
    ):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        self.encoder_decoder = _is_encoder(large)
        layers = _layer_count(large.config)
        if not -(layers + 1) <= layer <= layers:
            raise ValueError(
                f"layer must index the large model's {layers + 1} hidden states "
                f"(-{layers + 1}..{layers}), got {layer}"
            )
        large_width = large.get_input_embeddings().embedding_dim
        small_width = small.get_input_embeddings().embedding_dim
        hidden = projector_hidden or max(large_width, small_width)
        if hidden < 1:
            raise ValueError(f"projector_hidden must be >= 1, got {projector_hidden}")
        self.large, self.small = large, small
        self.large_tokenizer, self.small_tokenizer = large_tokenizer, small_tokenizer
        self.large_source, self.layer, self.fusion = str(large_source), layer, fusion
        self.shared_vocab = _same_vocabulary(large_tokenizer, small_tokenizer)
        torch.manual_seed(seed)
        dtype = small.get_input_embeddings().weight.dtype
        self.projector = torch.nn.Sequential(
            torch.nn.Linear(large_width, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, small_width),
        ).to(dtype=dtype, device=small.device)
        torch.nn.init.zeros_(self.projector[2].weight)  # training starts from the small model
        torch.nn.init.zeros_(self.projector[2].bias)
        self.prompt_embedding = None
        if not self.shared_vocab:
            self.prompt_embedding = torch.nn.Embedding(len(large_tokenizer), small_width).to(
                dtype=dtype, device=small.device
            )
            torch.nn.init.zeros_(self.prompt_embedding.weight)
        self.freeze_large()

    def freeze_large(self) -> None:
        """The large model is never trained: no gradients, always in eval mode."""
        self.large.requires_grad_(False)
        self.large.eval()

    def train(self, mode: bool = True) -> LLMToSLM:
        super().train(mode)
        self.large.eval()
        return self

    @property
    def device(self) -> torch.device:
        return self.small.device

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """Projector, small model and (different tokenizers) the prompt embedding table."""
        return [p for name, p in self.named_parameters() if not name.startswith("large.")]

    @torch.no_grad()
    def encode(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """The large model's states of left-padded prompts (B, P) -> (B, P, large width)."""
        device = self.large.device
        ids, mask, pos = ids.to(device), mask.to(device), pos.to(device)
        want_layers = self.layer != -1
        if self.encoder_decoder:
            encoder = self.large.get_encoder() if self.large.can_generate() else self.large
            out = encoder(input_ids=ids, attention_mask=mask, output_hidden_states=want_layers)
        else:
            out = self.large.base_model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=pos,
                output_hidden_states=want_layers,
            )
        states = out.hidden_states[self.layer] if want_layers else out.last_hidden_state
        return states.to(self.small.device)  # (B, P, large width)

    def prompt_token_embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        """The small side's own embedding of prompt ids (B, P) -> (B, P, small width)."""
        ids = ids.to(self.small.device)
        if self.prompt_embedding is not None:
            return self.prompt_embedding(ids)
        return self.small.get_input_embeddings()(ids)

    def prompt_embeddings(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        pos: torch.Tensor | None = None,
        states: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The small model's fused prompt embeddings (B, P, small width): its own embedding plus
        (add) or replaced by (replace) the projected large encoding (`states`, if already
        computed, else `encode`'s)."""
        pos = (mask.cumsum(-1) - 1).clamp(min=0) if pos is None else pos
        states = self.encode(ids, mask, pos) if states is None else states.to(self.small.device)
        projected = self.projector(states.to(self.projector[0].weight.dtype))
        if self.fusion == "replace":
            return projected  # (B, P, D)
        return self.prompt_token_embeddings(ids) + projected  # (B, P, D)

    def forward(self, prompt_ids, prompt_mask, response_ids, response_mask) -> torch.Tensor:
        """Mean next-token loss over the response tokens only (prompt and padding masked)."""
        prompt = self.prompt_embeddings(prompt_ids, prompt_mask)  # (B, P, D)
        response_ids = response_ids.to(self.device)
        response = self.small.get_input_embeddings()(response_ids)  # (B, R, D)
        return response_loss(
            self.small, torch.cat([prompt, response], 1), prompt_mask, response_ids, response_mask
        )

    # ------------------------------------------------------------------------- persistence

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write the config (JSON), the projector (and prompt embedding) weights, and the small
        model with its tokenizer. The large model is referenced by `large_source`, not copied."""
        if not self.large_source:
            raise ValueError("large_source is empty: say where the large model is loaded from")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = {
            "large": self.large_source,
            "layer": self.layer,
            "fusion": self.fusion,
            "projector_hidden": self.projector[0].out_features,
            "shared_vocab": self.shared_vocab,
            "encoder_decoder": self.encoder_decoder,
        }
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        weights = {f"projector.{k}": v.contiguous() for k, v in self.projector.state_dict().items()}
        if self.prompt_embedding is not None:
            weights["prompt_embedding.weight"] = self.prompt_embedding.weight.detach().contiguous()
        save_file(weights, str(folder / WEIGHTS_FILE))
        self.small.save_pretrained(folder / SMALL_DIR)
        self.small_tokenizer.save_pretrained(folder / SMALL_DIR)
        return folder

    @classmethod
    def from_pretrained(
        cls,
        folder: str | os.PathLike,
        *,
        large=None,
        large_tokenizer=None,
        dtype: str = "float32",
        device: str = "cpu",
    ) -> LLMToSLM:
        """Load what `save_pretrained` wrote; the large model is loaded from the recorded source
        unless `large` (with `large_tokenizer`) is given."""
        folder = resolve(folder)
        config_path = folder / CONFIG_FILE
        if not config_path.is_file():
            raise FileNotFoundError(f"no LLM-to-SLM checkpoint at {folder} (no {CONFIG_FILE})")
        config = json.loads(config_path.read_text())
        if large is None:
            large, large_tokenizer = load_large(config["large"], dtype=dtype, device=device)
        small, small_tokenizer = load_model(folder / SMALL_DIR, dtype=dtype, device=device)
        model = cls(
            large,
            small,
            large_tokenizer,
            small_tokenizer,
            large_source=config["large"],
            layer=config["layer"],
            fusion=config["fusion"],
            projector_hidden=config["projector_hidden"],
        )
        weights = load_file(str(folder / WEIGHTS_FILE))
        model.projector.load_state_dict(
            {k.removeprefix("projector."): v for k, v in weights.items() if k.startswith("proj")}
        )
        if model.prompt_embedding is not None:
            model.prompt_embedding.weight.data.copy_(weights["prompt_embedding.weight"])
        model.eval()
        return model


def load_large(
    source: str | os.PathLike,
    *,
    revision: str = "main",
    dtype: str = "float32",
    device: str = "cpu",
):
    """Load a large model for LLM-to-SLM with its tokenizer (as shipped), at `revision`: the
    encoder of an encoder-decoder model (T5 and the like), else a causal LM."""
    local = resolve(source)
    target = str(local) if local.exists() else str(source)
    config = load_config(source, revision=revision)
    causal = any(a.endswith("ForCausalLM") for a in getattr(config, "architectures", None) or [])
    if causal or not (config.is_encoder_decoder or "t5" in config.model_type):
        return load_model(source, revision=revision, dtype=dtype, device=device)
    model = AutoModelForTextEncoding.from_pretrained(target, revision=revision, dtype=DTYPES[dtype])
    if device in ("cuda", "auto") and torch.cuda.is_available():
        model = model.to("cuda")
    tokenizer = AutoTokenizer.from_pretrained(target, revision=revision)
    return model.eval(), tokenizer


def large_prompts(tokenizer, prompts: Sequence[str]) -> list[str]:
    """Prompts as the large model reads them: ending in the end token when its tokenizer's own
    template appends one (T5's `</s>`: the encoder was trained on inputs ending in it), which
    the engine's tokenization, without special tokens, would leave off."""
    eos = tokenizer.eos_token
    if eos is None or tokenizer("x")["input_ids"][-1:] != [tokenizer.eos_token_id]:
        return list(prompts)
    return [p if p.endswith(eos) else p + eos for p in prompts]


# ----------------------------------------------------------------------------- System 1 wrapper


class ConditionedSmall(torch.nn.Module):
    """The small model of an `LLMToSLM`, looking like an HF causal LM whose prompt columns carry
    the projected large encoding.

    `condition_on_prompts(batch)` (called by `fsgen.collaborate` once per prompt batch) runs the
    large model on the batch's prompt columns. A later call covering columns [c, c + k) (c is the
    length of the KV cache passed, 0 without one) fuses the encoding into those of its columns
    that are prompt columns. In `fsgen.collaborate`, the models must share one tokenizer.
    """

    def __init__(self, model: LLMToSLM):
        super().__init__()
        self.model = model
        self.config = model.small.config
        self.generation_config = model.small.generation_config
        self.prompt: torch.Tensor | None = None  # (B, P, D) fused prompt embeddings
        self.encode_seconds = 0.0
        self.lean_large: fast_neox.FastNeoX | None = None  # set by `generate`'s lean path

    @property
    def device(self) -> torch.device:
        return self.model.device

    @torch.no_grad()
    def condition_on_prompts(self, batch: Batch) -> None:
        """Encode the prompt columns of `batch` (the large model's one forward pass, through
        `lean_large` when set)."""
        started = time.perf_counter()
        states = None
        if self.lean_large is not None:
            device = self.lean_large.device
            states = self.lean_large.encode(
                *(t.to(device) for t in (batch.seq, batch.mask, batch.pos))
            )
        self.prompt = self.model.prompt_embeddings(batch.seq, batch.mask, batch.pos, states)
        self.encode_seconds += time.perf_counter() - started

    @torch.no_grad()
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values=None,
        use_cache: bool = False,
        **kwargs,
    ):
        if self.prompt is None:
            raise ValueError("ConditionedSmall was called before condition_on_prompts(batch)")
        rows = input_ids.shape[0]
        if rows != self.prompt.shape[0]:
            raise ValueError(
                f"input_ids has {rows} rows, but the model was conditioned on a batch of "
                f"{self.prompt.shape[0]} prompts"
            )
        start = past_key_values.get_seq_length() if past_key_values is not None else 0
        embeds = self.embed_columns(input_ids, start)
        if embeds is None:  # past the prompt (every decoding step): the small model as it is
            return self.model.small(
                input_ids=input_ids.to(self.prompt.device),
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=past_key_values,
                use_cache=use_cache,
                **kwargs,
            )
        return self.model.small(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            use_cache=use_cache,
            **kwargs,
        )

    @property
    def causal_lm(self):
        """The small causal LM (what the engine's lean forward runs)."""
        return self.model.small

    def embed_columns(self, input_ids: torch.Tensor, start: int) -> torch.Tensor | None:
        """Input embeddings (B, k, D) of columns [start, start + k) whose ids are `input_ids`:
        the fused prompt embeddings on prompt columns, the small model's own embedding after;
        None when no column is a prompt column (the small model embeds the ids itself)."""
        if self.prompt is None:
            raise ValueError("ConditionedSmall was called before condition_on_prompts(batch)")
        width = input_ids.shape[1]
        overlap = max(0, min(self.prompt.shape[1] - start, width))  # prompt columns among these
        if overlap == 0:
            return None
        tail = input_ids[:, overlap:].to(self.prompt.device)  # response ids: the small vocabulary
        return torch.cat(
            [
                self.prompt[:, start : start + overlap],
                self.model.small.get_input_embeddings()(tail),
            ],
            1,
        )  # (B, k, D)


def generate(
    model: LLMToSLM,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    do_sample: bool = False,
    temperature: float = 1.0,
    seed: int = 0,
    stop: Sequence[str] | None = None,
    trace: bool = False,
    forward: str = "auto",
) -> Collaboration:
    """LLM-to-SLM generation: per batch of prompts, the large model encodes once, then the small
    model decodes with its KV cache (batched, left padded), greedy or sampled, through the
    engine (`fsgen.engine.collaborate.generate`: its stopping rule and forward). Prompts are
    read with the large model's tokenizer, the output with the small model's. When the large
    model is a GPT-NeoX read at its last layer, the lean forward encodes too. The summary adds
    `encode_seconds`, the large model's share of the time."""
    wrapper = ConditionedSmall(model)
    if forward != "hf" and lean_encoding(model):  # the lean forward encodes, as it generates
        wrapper.lean_large = fast_neox.FastNeoX(model.large)
    result = engine_generate(
        wrapper,
        model.small_tokenizer,
        large_prompts(model.large_tokenizer, prompts),
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        do_sample=do_sample,
        temperature=temperature,
        seed=seed,
        stop=stop,
        trace=trace,
        prompt_tokenizer=model.large_tokenizer,
        forward=forward,
    )
    result.summary["method"] = "llm_to_slm"
    result.summary["encode_seconds"] = wrapper.encode_seconds
    return result


def lean_encoding(model: LLMToSLM) -> bool:
    """Whether the lean GPT-NeoX forward can encode for `model`: a GPT-NeoX large model read at
    its last layer (its final layer norm's states)."""
    return not model.encoder_decoder and model.layer == -1 and fast_neox.supports(model.large)


# ----------------------------------------------------------------------------- training


def response_labels(
    prompt_width: int, response_ids: torch.Tensor, response_mask: torch.Tensor
) -> torch.Tensor:
    """Targets over prompt + response columns (B, P + R): response ids, -100 elsewhere."""
    prompt = torch.full((len(response_ids), prompt_width), -100, dtype=torch.long)
    response = response_ids.masked_fill(response_mask.to(response_ids.device) == 0, -100)
    return torch.cat([prompt.to(response.device), response], 1)


def response_loss(small, embeds, prompt_mask, response_ids, response_mask) -> torch.Tensor:
    """Mean next-token loss of `small` over the response tokens of `embeds` (B, P + R, D)."""
    device = embeds.device
    mask = torch.cat([prompt_mask.to(device), response_mask.to(device)], 1)  # (B, P + R)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = small(inputs_embeds=embeds, attention_mask=mask, position_ids=pos).logits
    labels = response_labels(prompt_mask.shape[1], response_ids, response_mask).to(device)
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].transpose(1, 2).float(), labels[:, 1:], ignore_index=-100
    )  # logits at column t predict column t + 1


def small_response_loss(small, prompt_ids, prompt_mask, response_ids, response_mask):
    """`response_loss` of a plain small model (its own embedding everywhere)."""
    ids = torch.cat([prompt_ids, response_ids], 1).to(small.device)  # (B, P + R)
    embeds = small.get_input_embeddings()(ids)
    return response_loss(small, embeds, prompt_mask, response_ids.to(small.device), response_mask)


@dataclass(frozen=True)
class Pair:
    """One training example: the prompt and the response that follows it."""

    prompt: str
    response: str


def training_pairs(task: str, n: int, *, seed: int = 0) -> list[Pair]:
    """`n` (prompt, response) pairs of `task`'s training split, prompts as
    `fsgen.data.tasks.build_prompts` makes them, responses the reference solutions.

    Generated tasks (synthetic, expression) draw fresh training problems from
    `fsgen.data.synthetic.generate_problems(split="train")`; the prompt is "Question: ...\\nAnswer:"
    (or "...\\nExpression:") and the response " <worked solution>" (or " <formula>"), as in the
    ladder's corpus.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    task_spec = get_task(task)
    if "train" not in task_spec.splits:
        raise ValueError(f"task {task!r} has no train split (splits: {task_spec.splits})")
    if task_spec.name in GENERATED:
        examples = generated_examples(task_spec.name, n, split="train", seed=seed)
    else:
        examples = load_examples(task_spec, n_prompts=n, seed=seed, split="train")
    prompts = build_prompts(task_spec, examples)
    return [Pair(p, f" {e.solution.strip()}") for p, e in zip(prompts, examples, strict=True)]


def mixed_training_pairs(tasks: Sequence[str], n: int, *, seed: int = 0) -> list[Pair]:
    """`n` training pairs of each of `tasks`, interleaved (one of each task in turn)."""
    tasks = task_list(tasks)
    per_task = [training_pairs(task, n, seed=seed) for task in tasks]
    return [pair for row in zip(*per_task, strict=True) for pair in row]


def task_list(tasks: str | Sequence[str]) -> list[str]:
    """`tasks` as a non-empty list of registered task names (`name_list`: one name is a list
    of one)."""
    tasks = name_list(tasks, "tasks")
    for task in tasks:
        get_task(task)
    return tasks


@dataclass
class Encoded:
    """Training pairs as token ids: prompts (large tokenizer), responses (small, EOS closed)."""

    prompts: list[list[int]]
    responses: list[list[int]]
    prompt_pad: int
    response_pad: int

    def collate(self, rows: Sequence[int]) -> tuple[torch.Tensor, ...]:
        """Left-padded prompts and right-padded responses: ids and masks (B, P), (B, R)."""
        p_ids, p_mask = _pad([self.prompts[r] for r in rows], self.prompt_pad, left=True)
        r_ids, r_mask = _pad([self.responses[r] for r in rows], self.response_pad, left=False)
        return p_ids, p_mask, r_ids, r_mask


def _pad(rows: list[list[int]], pad: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span], mask[i, span] = torch.tensor(row, dtype=torch.long), 1
    return ids, mask


def encode_pairs(pairs: Sequence[Pair], prompt_tokenizer, response_tokenizer) -> Encoded:
    """Tokenize prompts and responses separately; every response ends in EOS."""
    if not pairs:
        raise ValueError("no training pairs given")
    prompts = large_prompts(prompt_tokenizer, [p.prompt for p in pairs])
    prompts = prompt_tokenizer(prompts, add_special_tokens=False)["input_ids"]
    responses = response_tokenizer([p.response for p in pairs], add_special_tokens=False)
    eos = response_tokenizer.eos_token_id
    return Encoded(
        prompts,
        [ids + [eos] for ids in responses["input_ids"]],
        padding_id(prompt_tokenizer),
        padding_id(response_tokenizer),
    )


@dataclass(frozen=True)
class TrainConfig:
    """One training budget, shared by LLM-to-SLM and the fine-tuned small baseline."""

    steps: int = 200
    batch_size: int = 16
    lr: float = 2e-3
    warmup_steps: int = 10
    seed: int = 0

    def __post_init__(self):
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")


def _optimize(
    module: torch.nn.Module,
    parameters: list[torch.nn.Parameter],
    step_loss: Callable[[list[int]], torch.Tensor],
    n_examples: int,
    config: TrainConfig,
    desc: str,
    progress: bool,
) -> list[float]:
    """`fsgen.models.train.optimize` (no weight decay) over seeded epochs of the `n_examples` rows."""
    torch.manual_seed(config.seed)
    batches = batch_order(n_examples, config.steps, config.batch_size, config.seed)
    return optimize(
        module,
        parameters,
        step_loss,
        batches,
        lr=config.lr,
        warmup_steps=config.warmup_steps,
        weight_decay=0.0,
        desc=desc,
        progress=progress,
    )


def train_llm_to_slm(
    model: LLMToSLM, pairs: Sequence[Pair], config: TrainConfig, *, progress: bool = True
) -> list[float]:
    """Train the projector and the small model (the large model stays frozen) on the response
    tokens of `pairs`; returns the loss of every step."""
    data = encode_pairs(pairs, model.large_tokenizer, model.small_tokenizer)
    model.freeze_large()

    def step_loss(rows: list[int]) -> torch.Tensor:
        return model(*data.collate(rows))

    return _optimize(
        model, model.trainable_parameters(), step_loss, len(pairs), config, "llm-to-slm", progress
    )


def fine_tune_small(
    small, tokenizer, pairs: Sequence[Pair], config: TrainConfig, *, progress: bool = True
) -> list[float]:
    """The baseline with the same budget: the small model alone fine-tuned on the response tokens
    of `pairs` (same data, steps and learning rate); returns the loss of every step."""
    data = encode_pairs(pairs, tokenizer, tokenizer)

    def step_loss(rows: list[int]) -> torch.Tensor:
        return small_response_loss(small, *data.collate(rows))

    return _optimize(
        small, list(small.parameters()), step_loss, len(pairs), config, "fine-tune small", progress
    )


# ----------------------------------------------------------------------------- the stage


@dataclass
class Systems:
    """What stage 05 compares: the large model alone (the pair's baseline: the large model
    itself, or for an encoder such as T5's, a causal LM named as the pair's `baseline`; None if
    none), the small model, the fine-tuned small model and LLM-to-SLM, with the training curves
    of the last two."""

    large: torch.nn.Module | None
    small: torch.nn.Module
    fine_tuned: torch.nn.Module
    llm_to_slm: LLMToSLM
    tokenizer: object  # the small model's
    names: dict[str, str] = field(default_factory=dict)  # which models made up the pair
    curves: pd.DataFrame = field(default_factory=pd.DataFrame)


def stage_pair(profile: Profile, large: str, small: str, baseline: str = "") -> dict[str, str]:
    """The (large, small) pair and the large baseline as names, sources and revisions: a name is
    a rung of `profile` (its source and revision are the rung's) or a path / hub id (revision
    main). `baseline` ("": the large model itself) is the model the speed-up and the gap closed
    are measured against; an encoder-decoder large model (T5) cannot generate alone, so its
    pairing names a causal LM sharing the small model's tokenizer."""
    chosen = {"large": large, "small": small}
    for role, name in chosen.items():
        if not name:
            raise ValueError(f"no {role} model given for profile {profile.name!r}, got {name!r}")
    chosen["baseline"] = baseline
    rungs = {r.name: r for r in profile.rungs}
    pair = dict(chosen)
    for role, name in chosen.items():
        rung = rungs.get(name)
        pair[f"{role}_source"] = rung.model if rung else name
        pair[f"{role}_revision"] = rung.revision if rung else "main"
    return pair


def train_systems(
    profile: Profile,
    pair: dict[str, str],
    *,
    out_dir: str | os.PathLike,
    tasks: str | Sequence[str] = "synthetic",
    train_pairs: int = 2000,
    config: TrainConfig = TrainConfig(),
    layer: int = -1,
    fusion: str = "add",
    projector_hidden: int | None = None,
    progress: bool = True,
) -> Systems:
    """Load the pair, train LLM-to-SLM and the fine-tuned small baseline on the same budget
    (`train_pairs` pairs of each of `tasks`, interleaved), and save both checkpoints under
    `out_dir` (`llm_to_slm/`, `fine_tuned_small/`)."""
    load = {"dtype": profile.dtype, "device": profile.device}
    large, large_tok = load_large(pair["large_source"], revision=pair["large_revision"], **load)
    load["revision"] = pair["small_revision"]
    small, small_tok = load_model(pair["small_source"], **load)
    pairs = mixed_training_pairs(tasks, train_pairs, seed=config.seed)
    conditioned_small, _ = load_model(pair["small_source"], **load)
    model = LLMToSLM(
        large,
        conditioned_small,
        large_tok,
        small_tok,
        large_source=pair["large_source"],
        layer=layer,
        fusion=fusion,
        projector_hidden=projector_hidden,
        seed=config.seed,
    )
    curve = train_llm_to_slm(model, pairs, config, progress=progress)
    fine_tuned, _ = load_model(pair["small_source"], **load)
    baseline = fine_tune_small(fine_tuned, small_tok, pairs, config, progress=progress)
    out_dir = resolve(out_dir)
    model.save_pretrained(out_dir / "llm_to_slm")
    fine_tuned.save_pretrained(out_dir / "fine_tuned_small")
    small_tok.save_pretrained(out_dir / "fine_tuned_small")
    curves = pd.DataFrame(
        [{"model": "LLM-to-SLM", "step": s, "loss": v} for s, v in enumerate(curve)]
        + [{"model": "fine-tuned small", "step": s, "loss": v} for s, v in enumerate(baseline)]
    )
    names = {"large": pair["large"], "small": pair["small"], "baseline": pair.get("baseline", "")}
    return Systems(
        baseline_model(pair, model, small_tok, profile),
        small,
        fine_tuned,
        model,
        small_tok,
        names,
        curves,
    )


def baseline_model(pair: dict[str, str], model: LLMToSLM, small_tokenizer, profile: Profile):
    """The large model alone that LLM-to-SLM is compared with: the pair's `baseline` (a causal
    LM reading the small model's tokenizer), else the large model when it can generate, else
    None (no speed-up or gap-closed figure)."""
    if not pair.get("baseline"):
        return None if model.encoder_decoder else model.large
    baseline, tokenizer = load_model(
        pair["baseline_source"],
        revision=pair["baseline_revision"],
        dtype=profile.dtype,
        device=profile.device,
    )
    if not _same_vocabulary(tokenizer, small_tokenizer):
        raise ValueError(
            f"the baseline {pair['baseline']!r} must read the small model's tokenizer (the "
            f"four systems decode the same prompts), but its vocabulary differs from "
            f"{pair['small']!r}'s"
        )
    return baseline


SYSTEMS = ("large", "small", "fine-tuned small", "LLM-to-SLM")


def _compared(systems: Systems) -> tuple[str, ...]:
    """The systems that can generate: without a baseline, an encoder (T5's) cannot alone."""
    return SYSTEMS if systems.large is not None else SYSTEMS[1:]


def run_system(systems: Systems, name: str, prompts, **kwargs) -> Collaboration:
    """Generate with one of the compared systems (greedy; the same loop for all four)."""
    if name == "LLM-to-SLM":
        return generate(systems.llm_to_slm, prompts, **kwargs)
    model = {
        "large": systems.large,
        "small": systems.small,
        "fine-tuned small": systems.fine_tuned,
    }[name]
    return engine_generate(model, systems.tokenizer, prompts, **kwargs)


def evaluate_systems(
    systems: Systems,
    *,
    tasks: str | Sequence[str] = "synthetic",
    n_prompts: int = 100,
    seed: int = 0,
    max_new_tokens: int = 160,
    batch_size: int = 50,
) -> pd.DataFrame:
    """Accuracy of the systems on each task's test split (greedy), and the collaboration
    frequency (oracle against the large model) of each small system: one row per task and
    system."""
    return pd.concat(
        [
            _evaluate_task(systems, task, n_prompts, seed, max_new_tokens, batch_size)
            for task in task_list(tasks)
        ],
        ignore_index=True,
    )


def _evaluate_task(systems, task, n_prompts, seed, max_new_tokens, batch_size) -> pd.DataFrame:
    examples = load_examples(task, n_prompts=n_prompts, seed=seed, split="test")
    prompts = build_prompts(task, examples)
    stop = list(get_task(task).stop)
    run = {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "stop": stop}
    rows = []
    for name in _compared(systems):
        result = run_system(systems, name, prompts, **run)
        scores = score(task, result.texts, examples)
        low, high = accuracy_interval(scores)
        rows.append(
            {
                "task": task,
                "system": name,
                "accuracy": accuracy(scores),
                "accuracy_low": low,
                "accuracy_high": high,
                "tokens_per_prompt": result.summary["tokens"] / len(prompts),
            }
        )
    table = pd.DataFrame(rows)
    table["collaboration_frequency"] = float("nan")
    if systems.llm_to_slm.shared_vocab and "large" in _compared(systems):
        smalls = {
            "small": systems.small,
            "fine-tuned small": systems.fine_tuned,
            "LLM-to-SLM": ConditionedSmall(systems.llm_to_slm),
        }
        oracle = collaborate_ladder(systems.large, smalls, systems.tokenizer, prompts, **run)
        for name, result in oracle.items():
            table.loc[table.system == name, "collaboration_frequency"] = result.summary[
                "collaboration_frequency"
            ]
    table["prompts"] = len(prompts)
    return table


def time_systems(
    systems: Systems,
    *,
    tasks: str | Sequence[str] = "synthetic",
    n_prompts: int = 8,
    seed: int = 0,
    max_new_tokens: int = 160,
    batch_sizes: Sequence[int] = (1, 8),
    repeats: int = 3,
) -> pd.DataFrame:
    """Wall time of each system on the same test prompts of each task at each batch size,
    `repeats` times (systems interleaved within a repeat); one row per task, system, batch size
    and repeat.

    LLM-to-SLM's time includes the large model's encoding (`encode_seconds` says how much). Each
    run is timed by `fsgen.core.timing.timed`: after a full garbage collection, with the collector off
    (a full collection walks the whole process heap, large after training)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    rows = []
    for task in task_list(tasks):
        examples = load_examples(task, n_prompts=n_prompts, seed=seed, split="test")
        rows += _time_task(
            systems, task, build_prompts(task, examples), max_new_tokens, batch_sizes, repeats
        )
    return pd.DataFrame(rows)


def _time_task(systems, task, prompts, max_new_tokens, batch_sizes, repeats) -> list[dict]:
    stop = list(get_task(task).stop)
    rows = []
    for repeat in range(repeats):
        for batch_size in batch_sizes:
            for name in _compared(systems):
                run = {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "stop": stop}
                seconds, _, result = timed(
                    lambda n=name, r=run: run_system(systems, n, prompts, **r)
                )
                rows.append(
                    {
                        "task": task,
                        "system": name,
                        "batch_size": batch_size,
                        "repeat": repeat,
                        "seconds": seconds,
                        "tokens": result.summary["tokens"],
                        "encode_seconds": result.summary.get("encode_seconds", 0.0),
                    }
                )
    return rows


def summarize_timing(timing: pd.DataFrame) -> pd.DataFrame:
    """Median seconds per task, system and batch size, and the speed-up over the large model
    alone (large-alone time / the system's time, on the same prompts)."""
    table = (
        timing.groupby(["task", "batch_size", "system"], sort=False)
        .agg(
            seconds=("seconds", statistics.median),
            tokens=("tokens", "median"),
            encode_seconds=("encode_seconds", statistics.median),
        )
        .reset_index()
    )
    large = table[table.system == "large"].set_index(["task", "batch_size"])["seconds"]
    keys = pd.MultiIndex.from_frame(table[["task", "batch_size"]])
    table["speedup_vs_large"] = large.reindex(keys).to_numpy() / table["seconds"].to_numpy()
    table["ms_per_token"] = 1000 * table["seconds"] / table["tokens"].clip(lower=1)
    return table


def write_llm_to_slm_outputs(
    quality: pd.DataFrame,
    timing: pd.DataFrame,
    systems: Systems,
    metrics_file: str | os.PathLike,
    timing_file: str | os.PathLike,
    results_dir: str | os.PathLike,
) -> pd.DataFrame:
    """Write the deterministic metrics (accuracies, collaboration frequencies, parameter
    counts), the timings (median seconds, speed-ups) apart, and the results CSVs. Returns the
    results table: quality joined with the median timings."""
    speed = summarize_timing(timing)
    key = {
        "large": "large",
        "small": "small",
        "fine-tuned small": "fine_tuned_small",
        "LLM-to-SLM": "llm_to_slm",
    }
    params = {
        "large": count_parameters(systems.large)["total"] if systems.large is not None else None,
        "small": count_parameters(systems.small)["total"],
        "fine-tuned small": count_parameters(systems.fine_tuned)["total"],
        "LLM-to-SLM": sum(p.numel() for p in systems.llm_to_slm.parameters()),
    }
    metrics: dict[str, object] = {}
    for task, rows in quality.groupby("task", sort=False):
        metrics |= _quality_metrics(task, rows, key, params)
    if not systems.curves.empty:
        last = systems.curves.groupby("model")["loss"].last()
        metrics["llm_to_slm.final_train_loss"] = float(last["LLM-to-SLM"])
        metrics["fine_tuned_small.final_train_loss"] = float(last["fine-tuned small"])
    write_metrics(metrics_file, metrics)
    timings = {}
    for row in speed.itertuples():
        prefix = f"{row.task}.{key[row.system]}.batch{row.batch_size}"
        timings[f"{prefix}.seconds"] = row.seconds
        timings[f"{prefix}.ms_per_token"] = row.ms_per_token
        timings[f"{prefix}.speedup_vs_large"] = row.speedup_vs_large
        if row.system == "LLM-to-SLM":
            timings[f"{prefix}.encode_seconds"] = row.encode_seconds
    write_metrics(timing_file, timings)
    results_dir = resolve(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    quality.to_csv(results_dir / "quality.csv", index=False, float_format="%.6g")
    systems.curves.to_csv(results_dir / "loss_curves.csv", index=False, float_format="%.6g")
    table = speed.merge(quality, on=["task", "system"])
    table.to_csv(results_dir / "results.csv", index=False, float_format="%.6g")
    return table


def _quality_metrics(task: str, quality: pd.DataFrame, key: dict, params: dict) -> dict:
    """One task's metrics `<task>.<system>.<name>`: accuracy with its interval, parameters, the
    collaboration frequency of each small system; LLM-to-SLM's accuracy relative to the large
    model's, and the share of the fine-tuned small model's gap to the large one it closes."""
    metrics: dict[str, object] = {f"{task}.prompts": int(quality["prompts"].iloc[0])}
    for row in quality.itertuples():
        stem = f"{task}.{key[row.system]}"
        for name in ("accuracy", "accuracy_low", "accuracy_high"):
            metrics[f"{stem}.{name}"] = getattr(row, name)
        metrics[f"{stem}.params"] = params[row.system]
        if row.system != "large":
            metrics[f"{stem}.collaboration_frequency"] = row.collaboration_frequency
    acc = quality.set_index("system")["accuracy"]
    large = acc.get("large")
    gap = large - acc["fine-tuned small"] if large is not None else 0.0
    closed = (acc["LLM-to-SLM"] - acc["fine-tuned small"]) / gap if gap else None
    metrics[f"{task}.gap_closed"] = closed
    metrics[f"{task}.llm_to_slm.relative_quality"] = acc["LLM-to-SLM"] / large if large else None
    return metrics


def plot_llm_to_slm(table: pd.DataFrame, stem: str | os.PathLike | None = None):
    """Accuracy against median wall time, one marker per system and batch size."""
    sns.set_theme(style="whitegrid", context="notebook")
    tasks = list(dict.fromkeys(table["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4), squeeze=False)
    data = table.assign(batch=table["batch_size"].map(lambda b: f"batch {b}"))
    for ax, task in zip(axes[0], tasks, strict=True):
        sns.scatterplot(
            data=data[data.task == task],
            x="seconds",
            y="accuracy",
            hue="system",
            style="batch",
            s=90,
            ax=ax,
            legend=ax is axes[0][-1],
        )
        ax.set_xscale("log")
        ax.set(
            xlabel="median wall time (s, log scale)",
            ylabel=f"{task} accuracy (test split)",
            title=f"LLM-to-SLM on {task}: quality against time",
        )
    if stem is not None:
        save_figure(fig, stem)
    return fig
