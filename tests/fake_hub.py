"""A fake offline model hub: random-weight models of the hub profiles' real architectures, saved
in the Hugging Face cache layout under their real hub ids.

    python -m tests.fake_hub --cache /tmp/fake-hub            # every model of both hub profiles
    HF_HUB_CACHE=/tmp/fake-hub HF_HUB_OFFLINE=1 dvc exp run -S profile=pythia

`from_pretrained("Qwen/Qwen1.5-0.5B", revision="main")` then resolves offline, through the hub
library's own cache lookup (`models--Qwen--Qwen1.5-0.5B/refs/main` -> `snapshots/<commit>/`).
What the rehearsal needs from the real models is kept; only depth and width shrink for CPU:

- Qwen1.5 (`Qwen2ForCausalLM`): the padded model vocabulary (151,936) over a tokenizer of
  151,646 (151,643 byte-level BPE tokens, then `<|endoftext|>`, `<|im_start|>`, `<|im_end|>`),
  the ChatML chat template on base and -Chat tokenizers, `<|endoftext|>` as the base models' end
  and pad token, `<|im_end|>` and `<|endoftext|>` as the -Chat models' end ids, 32k context.
- Pythia (`GPTNeoXForCausalLM`): model vocabulary 50,304 over a tokenizer of 50,277
  (`<|endoftext|>` 0, `<|padding|>` 1, 50,252 BPE tokens, 23 runs of spaces), partial rotary
  (25%), parallel residual, untied embeddings, no pad token, right padding, 2,048 context.
- flan-t5 (`T5ForConditionalGeneration`, loaded as its encoder): a Unigram tokenizer of 32,100
  (`<pad>` 0, `</s>` 1, `<unk>` 2, ..., 100 `<extra_id_*>`) that ends every text with `</s>`,
  model vocabulary 32,128, gated-GELU feed-forward.

The BPE and Unigram models are trained on a corpus built from this machine's Python sources and
the GSM8K training split, then filled to the real sizes with merges (pieces) that real text
rarely reaches: token counts are close to, not equal to, the real tokenizers'.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import sysconfig
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
from tokenizers.trainers import BpeTrainer
from transformers import (
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)

from fsgen.analysis.estimates import HUB_CONFIGS, Shape

CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)  # Qwen1.5's template, as its tokenizer_config.json ships it
QWEN_TOKENIZER, QWEN_VOCAB = 151646, 151936
NEOX_TOKENIZER, NEOX_VOCAB = 50277, 50304
T5_TOKENIZER, T5_VOCAB = 32100, 32128


def family(hub_id: str) -> str:
    """'qwen', 'neox' or 't5' for a hub id of the profiles."""
    name = hub_id.lower()
    for key, fam in (("qwen", "qwen"), ("pythia", "neox"), ("t5", "t5")):
        if key in name:
            return fam
    raise ValueError(f"the fake hub builds Qwen1.5, Pythia and flan-t5 models, got {hub_id!r}")


def base_id(hub_id: str) -> str:
    """The base model of a -Chat id (itself otherwise)."""
    return hub_id.removesuffix("-Chat")


def tiny_shape(hub_id: str, rank: int) -> Shape:
    """A CPU-sized shape for the `rank`-th model of its ladder: wider and deeper up the ladder,
    so rungs stay ordered by size."""
    width = 32 * (rank + 1)
    return Shape(width, 1 + rank // 2, 4, 0, 0)


def model_config(hub_id: str, shape: Shape):
    """The real architecture class's config at `shape`, with the real vocabulary and specials."""
    fam, chat = family(hub_id), hub_id.endswith("-Chat")
    if fam == "qwen":
        return Qwen2Config(
            vocab_size=QWEN_VOCAB,
            hidden_size=shape.hidden,
            intermediate_size=shape.intermediate or (shape.hidden * 11 // 4 // 8 * 8),
            num_hidden_layers=shape.layers,
            num_attention_heads=shape.heads,
            num_key_value_heads=shape.kv_heads or shape.heads,
            max_position_embeddings=32768,
            rope_theta=1e6,
            rms_norm_eps=1e-6,
            tie_word_embeddings="0.5B" in hub_id,
            bos_token_id=151643,
            eos_token_id=151645 if chat else 151643,
            architectures=["Qwen2ForCausalLM"],
        )
    if fam == "neox":
        return GPTNeoXConfig(
            vocab_size=NEOX_VOCAB,
            hidden_size=shape.hidden,
            intermediate_size=shape.intermediate or 4 * shape.hidden,
            num_hidden_layers=shape.layers,
            num_attention_heads=shape.heads,
            rotary_pct=0.25,
            rotary_emb_base=10000,
            max_position_embeddings=2048,
            use_parallel_residual=True,
            tie_word_embeddings=False,
            bos_token_id=0,
            eos_token_id=0,
            architectures=["GPTNeoXForCausalLM"],
        )
    return T5Config(
        vocab_size=T5_VOCAB,
        d_model=shape.hidden,
        d_kv=max(shape.hidden // shape.heads, 8),
        d_ff=shape.intermediate or (shape.hidden * 11 // 4 // 8 * 8),
        num_layers=shape.layers,
        num_decoder_layers=shape.layers,
        num_heads=shape.heads,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        architectures=["T5ForConditionalGeneration"],
    )


def random_model(hub_id: str, shape: Shape, *, seed: int = 0, dtype=torch.float32):
    """A random-weight model of `hub_id`'s architecture class at `shape`."""
    config = model_config(hub_id, shape)
    classes = {
        "qwen": Qwen2ForCausalLM,
        "neox": GPTNeoXForCausalLM,
        "t5": T5ForConditionalGeneration,
    }
    torch.manual_seed(seed)
    model = classes[family(hub_id)](config).to(dtype)
    if family(hub_id) == "qwen":
        model.generation_config.eos_token_id = (
            [151645, 151643] if hub_id.endswith("-Chat") else 151643
        )
        model.generation_config.pad_token_id = 151643
    return model.eval()


# ----------------------------------------------------------------------------- tokenizers


def corpus(limit_chars: int = 4_000_000) -> list[str]:
    """Training text found on this machine: the standard library's Python sources and, where
    ../shared/data is present, GSM8K's training split (never the test prompts)."""
    texts, size = [], 0
    data = Path(
        os.environ.get("FSGEN_DATA_DIR", Path(__file__).resolve().parents[2] / "shared/data")
    )
    gsm8k = data / "gsm8k" / "train.jsonl"
    if gsm8k.exists():
        for line in filter(None, gsm8k.read_text().split("\n")):
            row = json.loads(line)
            texts.append(f"Question: {row['question']}\nAnswer: {row['answer']}\n")
            size += len(texts[-1])
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        if size >= limit_chars:
            break
        text = path.read_text(errors="ignore")
        texts.append(text)
        size += len(text)
    return texts


def _fill_bpe(tokenizer: Tokenizer, size: int) -> Tokenizer:
    """Grow a trained BPE to `size` tokens with merges of two tokens already in it (ranked
    after every trained merge, so text tokenises as trained unless the merge is reached)."""
    spec = json.loads(tokenizer.to_str())
    vocab, merges = spec["model"]["vocab"], spec["model"]["merges"]
    tokens = sorted(vocab, key=vocab.get)
    left = 0
    while len(vocab) < size:
        a = tokens[left % len(tokens)]
        for b in tokens:
            if len(vocab) >= size:
                break
            if a + b not in vocab:
                vocab[a + b] = len(vocab)
                merges.append([a, b])
        left += 1
    return Tokenizer.from_str(json.dumps(spec))


def bpe_tokenizer(
    texts: Iterable[str], regular: int, leading: Sequence[str] = (), trained: int = 8000
) -> Tokenizer:
    """A byte-level BPE of `regular` tokens (`leading` special tokens first), `trained` of
    them learnt from `texts`."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = BpeTrainer(
        vocab_size=min(trained, regular),
        special_tokens=list(leading),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return _fill_bpe(tokenizer, regular)


def unigram_tokenizer(texts: Iterable[str], pieces: int = 32000, trained: int = 4000) -> Tokenizer:
    """A T5-style Unigram tokenizer (Metaspace, `</s>` appended) of `pieces` pieces plus 100
    sentinel tokens; `<pad>`, `</s>`, `<unk>` are ids 0, 1, 2. Its pieces are those of a BPE
    learnt on `texts` (`trained` of them, scored by rank: Unigram training is minutes on CPU),
    filled with pieces real text seldom holds."""
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = BpeTrainer(
        vocab_size=trained, special_tokens=["<pad>", "</s>", "<unk>"], show_progress=False
    )
    bpe.train_from_iterator(texts, trainer)
    ranked = sorted(bpe.get_vocab().items(), key=lambda item: item[1])
    vocab = [[piece, 0.0] for piece, _ in ranked[:3]]
    vocab += [[piece, -1.0 - rank / 1000] for rank, (piece, _) in enumerate(ranked[3:])]
    known, n = {piece for piece, _ in vocab}, 0
    while len(vocab) < pieces:
        piece = f"\u2581{n:x}q"
        if piece not in known:
            vocab.append([piece, -99.0])
        n += 1
    tokenizer = Tokenizer(models.Unigram([tuple(v) for v in vocab], unk_id=2))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.add_special_tokens(
        [AddedToken(f"<extra_id_{i}>", special=True) for i in range(99, -1, -1)]
    )
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return tokenizer


def hf_tokenizer(fam: str, texts: list[str], *, chat: bool = False) -> PreTrainedTokenizerFast:
    """The tokenizer of a family as `from_pretrained` returns the real one (sizes, special
    tokens, end and pad tokens, chat template)."""
    if fam == "qwen":
        raw = bpe_tokenizer(texts, QWEN_TOKENIZER - 3)
        raw.add_special_tokens(
            [AddedToken(t, special=True) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")]
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=raw,
            eos_token="<|im_end|>" if chat else "<|endoftext|>",
            pad_token="<|endoftext|>",
            unk_token=None,
            bos_token=None,
            additional_special_tokens=["<|im_start|>", "<|im_end|>"],
            chat_template=CHATML,
            model_max_length=32768,
            clean_up_tokenization_spaces=False,
        )
    if fam == "neox":
        raw = bpe_tokenizer(texts, NEOX_TOKENIZER - 23, leading=("<|endoftext|>", "<|padding|>"))
        raw.add_tokens([AddedToken(" " * n, normalized=False) for n in range(24, 1, -1)])
        return PreTrainedTokenizerFast(
            tokenizer_object=raw,
            bos_token="<|endoftext|>",
            eos_token="<|endoftext|>",
            unk_token="<|endoftext|>",
            padding_side="right",
            clean_up_tokenization_spaces=False,
        )  # no pad token, as the Pythia tokenizer ships
    raw = unigram_tokenizer(texts, T5_TOKENIZER - 100)
    return PreTrainedTokenizerFast(
        tokenizer_object=raw,
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=[f"<extra_id_{i}>" for i in range(100)],
        model_max_length=512,
    )


# ----------------------------------------------------------------------------- the cache

TOKENIZER_CLASSES = {"qwen": "Qwen2Tokenizer", "neox": "GPTNeoXTokenizer", "t5": "T5Tokenizer"}


def _name_tokenizer_class(folder: Path, name: str) -> None:
    """Record the real tokenizer class in tokenizer_config.json, as the hub's files do."""
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["tokenizer_class"] = name
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def snapshot_dir(cache: str | os.PathLike, hub_id: str, revision: str = "main") -> Path:
    """The snapshot folder of `hub_id` in a hub cache, its ref `revision` pointing to it (the
    layout `huggingface_hub` reads offline)."""
    repo = Path(cache) / f"models--{hub_id.replace('/', '--')}"
    commit = hashlib.sha1(f"fsgen-fake-hub:{hub_id}:{revision}".encode()).hexdigest()
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    folder = repo / "snapshots" / commit
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def build_fake_hub(
    cache: str | os.PathLike,
    hub_ids: Sequence[str],
    *,
    shapes: dict[str, Shape] | None = None,
    texts: list[str] | None = None,
    seed: int = 0,
) -> dict[str, Path]:
    """Save a random-weight model and its tokenizer under each hub id in the cache folder `cache`
    (`HF_HUB_CACHE`); `shapes` overrides the CPU-sized default shape per id. Returns each id's
    snapshot folder."""
    texts = corpus() if texts is None else texts
    tokenizers: dict[tuple[str, bool], PreTrainedTokenizerFast] = {}
    ladders: dict[str, list[str]] = {}
    for hub_id in hub_ids:
        ladder = ladders.setdefault(family(hub_id), [])
        if base_id(hub_id) not in ladder:
            ladder.append(base_id(hub_id))
    for ladder in ladders.values():
        ladder.sort(
            key=lambda i: list(HUB_CONFIGS).index(i) if i in HUB_CONFIGS else len(HUB_CONFIGS)
        )
    folders = {}
    for hub_id in hub_ids:
        fam, chat = family(hub_id), hub_id.endswith("-Chat")
        rank = ladders[fam].index(base_id(hub_id))
        shape = (shapes or {}).get(hub_id) or tiny_shape(hub_id, rank)
        key = (fam, chat and fam == "qwen")
        if key not in tokenizers:
            tokenizers[key] = hf_tokenizer(fam, texts, chat=key[1])
        folder = snapshot_dir(cache, hub_id)
        random_model(hub_id, shape, seed=seed + rank).save_pretrained(folder)
        tokenizers[key].save_pretrained(folder)
        _name_tokenizer_class(folder, TOKENIZER_CLASSES[fam])
        folders[hub_id] = folder
    return folders


def profile_models(params_file: str | os.PathLike = "params.yaml") -> list[str]:
    """Every hub id the hub profiles and LLM-to-SLM's pairs of `params_file` name."""
    from fsgen.core.io import read_yaml  # noqa: PLC0415 (only the command line needs it)

    params = read_yaml(params_file)
    ids = []
    for spec in params["profiles"].values():
        if spec.get("kind") == "hub":
            for rung in spec["rungs"]:
                ids += [rung["model"]] + ([rung["tuned"]] if rung.get("tuned") else [])
    for pair in params.get("llm_to_slm", {}).get("pairs", {}).values():
        ids += [m for m in pair.values() if "/" in str(m) and m not in ids]
    return list(dict.fromkeys(ids))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", required=True, help="the HF_HUB_CACHE folder to fill")
    parser.add_argument("--params", default="params.yaml", help="which profiles' models to build")
    parser.add_argument("models", nargs="*", help="hub ids (default: every one in --params)")
    args = parser.parse_args(argv)
    real = Path(os.path.expanduser("~/.cache/huggingface")).resolve()
    if Path(args.cache).resolve().is_relative_to(real):
        sys.exit(f"refusing to write fake models into the real Hugging Face cache {real}")
    ids = args.models or profile_models(args.params)
    for hub_id, folder in build_fake_hub(args.cache, ids).items():
        print(f"{hub_id}: {folder}")


if __name__ == "__main__":
    main()
