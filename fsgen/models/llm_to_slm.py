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

Decoding is the engine's (`fsgen.engine.collaborate.generate`): `LLMToSLM.decoder(prompts)` gives
`ConditionedSmall`, the small model as an HF-style causal LM whose prompt columns carry the
projected large encoding, with the rest of the engine's inputs (the two tokenizers, the prompts
as the large model reads them). The engine tells the wrapper each batch's prompt columns through
`condition_on_prompts(batch)` (once per prompt batch, which is when the large model runs), and
every later call locates its columns by the length of the KV cache it is given (0 without one).
So the same wrapper serves a plain generation and System 1 of `fsgen.collaborate` (oracle, both
paths, and speculative decoding).

Training (`fsgen.models.llm_to_slm_training`) uses `LLMToSLM.forward`: the response-only loss
`response_loss` below.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForTextEncoding, AutoTokenizer

from fsgen.core.paths import resolve
from fsgen.engine import fast_neox
from fsgen.engine.batch import Batch
from fsgen.models.profiles import DTYPES, load_config, load_model

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


def same_vocabulary(a, b) -> bool:
    """Whether two tokenizers are one, or hold the same vocabulary."""
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
        self.shared_vocab = same_vocabulary(large_tokenizer, small_tokenizer)
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

    # ------------------------------------------------------------------------- decoding

    def decoder(
        self, prompts: Sequence[str], *, forward: str = "auto"
    ) -> tuple[ConditionedSmall, dict]:
        """What the engine's `generate` decodes `prompts` with: the small model conditioned on
        the large encoding, and the rest of its inputs (the small tokenizer for the output, the
        prompts as the large model reads them, its tokenizer for them, `forward`):

            small, inputs = model.decoder(prompts)
            result = fsgen.generate(small, **inputs, max_new_tokens=64)

        Per batch of prompts the large model encodes once (through the lean forward when
        `lean_encoding(model)` holds and `forward` is not "hf"), then the small model decodes with
        its KV cache; `small.encode_seconds` is the large model's share of the time."""
        small = ConditionedSmall(self)
        if forward != "hf" and lean_encoding(self):  # the lean forward encodes, as it generates
            small.lean_large = fast_neox.FastNeoX(self.large)
        inputs = {
            "tokenizer": self.small_tokenizer,
            "prompts": large_prompts(self.large_tokenizer, prompts),
            "prompt_tokenizer": self.large_tokenizer,
            "forward": forward,
        }
        return small, inputs

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
        self.lean_large: fast_neox.FastNeoX | None = None  # set by `LLMToSLM.decoder`

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


def lean_encoding(model: LLMToSLM) -> bool:
    """Whether the lean GPT-NeoX forward can encode for `model`: a GPT-NeoX large model read at
    its last layer (its final layer norm's states)."""
    return not model.encoder_decoder and model.layer == -1 and fast_neox.supports(model.large)


# ----------------------------------------------------------------------------- the loss


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
