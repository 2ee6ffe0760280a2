"""A lean decode forward for GPT-NeoX (gpt-fast / nanoGPT style), on an HF model's own weights.

For the embedded ladder's tiny models most of the time of an HF forward pass is Python and
dispatch overhead (embedding and rotary modules, mask construction, `DynamicCache` bookkeeping,
module hooks), not arithmetic. `FastNeoX` runs the same weights of a `GPTNeoXForCausalLM` with
plain tensor calls: a preallocated static KV cache per layer (B, heads, max_len, head_dim),
rotary cos/sin tables computed once, and attention through
`torch.nn.functional.scaled_dot_product_attention` with an explicit boolean mask (left padding,
holes) built from the batch's attention mask. The math is HF's (layer norms, parallel or
sequential residual, rotary on the first `partial_rotary_factor` of each head, `hidden_act`,
final layer norm, `embed_out`), op for op, so float32 logits agree with HF's to rounding.

`LeanStream` is a drop-in for `fsgen.decoding.Stream` (`advance(batch)`), and runs the plain
decoding loop gpt-fast style: `prefill(batch)`, then `decode_one_token(tokens)` per step, with
positions and the key mask kept by the stream instead of a growing `Batch`. It serves plain
GPT-NeoX causal LMs and wrappers that expose `causal_lm` (the GPT-NeoX model) and
`embed_columns(input_ids, start)` (the input embeddings of columns [start, start + k), or None
for the model's own), as `fsgen.llm_to_slm.ConditionedSmall` does for LLM-to-SLM's prompt
positions (so only the prefill needs them). `FastNeoX.encode` gives a prompt batch's last
hidden states, LLM-to-SLM's encoding. `supports(model)` says whether a model can take this path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812

from fsgen.decoding import Batch


def causal_lm(model):
    """The GPT-NeoX causal LM behind `model` (itself, or a wrapper's `causal_lm`)."""
    return getattr(model, "causal_lm", model)


def supports(model) -> bool:
    """Whether `model` (or the causal LM it wraps) is a GPT-NeoX causal LM `FastNeoX` can run."""
    from transformers import GPTNeoXForCausalLM

    lm = causal_lm(model)
    if not isinstance(lm, GPTNeoXForCausalLM):
        return False
    rope = getattr(lm.config, "rope_parameters", None) or {}
    return rope.get("rope_type", "default") == "default"


class FastNeoX:
    """The weights of a `GPTNeoXForCausalLM`, run by a lean forward with a static KV cache;
    rotary tables cover `positions` (at least the model's `max_position_embeddings`)."""

    def __init__(self, model, positions: int = 0):
        from transformers.activations import ACT2FN

        if not supports(model):
            raise ValueError(f"FastNeoX runs GPT-NeoX causal LMs (default rope), got {type(model)}")
        config = model.config
        core = model.gpt_neox
        self.heads = config.num_attention_heads
        self.head_dim = config.hidden_size // self.heads
        rope = config.rope_parameters
        self.rotary = int(self.head_dim * rope.get("partial_rotary_factor", 1.0))
        self.scale = self.head_dim**-0.5
        self.eps = config.layer_norm_eps
        self.parallel = config.use_parallel_residual
        self.width = config.hidden_size
        self.act = F.gelu if config.hidden_act == "gelu" else ACT2FN[config.hidden_act]
        self.embed = core.embed_in.weight
        self.layers = [
            (
                (layer.input_layernorm.weight, layer.input_layernorm.bias),
                (layer.post_attention_layernorm.weight, layer.post_attention_layernorm.bias),
                (layer.attention.query_key_value.weight, layer.attention.query_key_value.bias),
                (layer.attention.dense.weight, layer.attention.dense.bias),
                (layer.mlp.dense_h_to_4h.weight, layer.mlp.dense_h_to_4h.bias),
                (layer.mlp.dense_4h_to_h.weight, layer.mlp.dense_4h_to_h.bias),
            )
            for layer in core.layers
        ]
        self.final_norm = (core.final_layer_norm.weight, core.final_layer_norm.bias)
        head = model.get_output_embeddings()
        self.head = (head.weight, head.bias)
        self.dtype, self.device = self.embed.dtype, self.embed.device
        self.inv_freq = core.rotary_emb.inv_freq.to(device=self.device, dtype=torch.float)
        self.rotary_scaling = core.rotary_emb.attention_scaling
        self.positions = 0
        self.cover(max(positions, config.max_position_embeddings))  # HF's rotary has no limit

    def cover(self, positions: int) -> None:
        """Make the rotary tables cover positions [0, positions), as HF computes them (float32
        products, cos/sin, then the model's dtype)."""
        if positions <= self.positions:
            return
        freqs = torch.arange(positions, device=self.device).float()[:, None] * self.inv_freq[None]
        emb = torch.cat((freqs, freqs), dim=-1)  # (positions, rotary)
        self.cos = (emb.cos() * self.rotary_scaling).to(self.dtype)
        self.sin = (emb.sin() * self.rotary_scaling).to(self.dtype)
        self.positions = positions

    def new_cache(self, rows: int, length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A static KV cache: per layer, keys and values (rows, heads, length, head_dim)."""
        shape = (rows, self.heads, length, self.head_dim)
        return [
            (
                torch.zeros(shape, dtype=self.dtype, device=self.device),
                torch.zeros(shape, dtype=self.dtype, device=self.device),
            )
            for _ in self.layers
        ]

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """HF's `apply_rotary_pos_emb` on one of q or k (B, H, k, head_dim)."""
        r = self.rotary
        x_rot, x_pass = x[..., :r], x[..., r:]
        half = r // 2
        rotated = torch.cat((-x_rot[..., half:], x_rot[..., :half]), dim=-1)
        out = x_rot * cos + rotated * sin
        return out if r == x.shape[-1] else torch.cat((out, x_pass), dim=-1)

    def forward(
        self,
        cache: list[tuple[torch.Tensor, torch.Tensor]],
        start: int,
        position_ids: torch.Tensor,
        attn_mask: torch.Tensor | None,
        input_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, k, V) of columns [start, start + k): writes their keys and values into
        `cache` and attends over cache columns [0, start + k) under `attn_mask` (a boolean
        (B, 1, k, start + k), True where attending; None: every earlier column, causal)."""
        x = self.hidden(cache, start, position_ids, attn_mask, input_ids, inputs_embeds)
        return F.linear(x, *self.head)  # (B, k, V)

    def hidden(
        self,
        cache: list[tuple[torch.Tensor, torch.Tensor]],
        start: int,
        position_ids: torch.Tensor,
        attn_mask: torch.Tensor | None,
        input_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`forward` without the output head: the final layer norm's states (B, k, width), what
        HF's `base_model(...).last_hidden_state` holds."""
        x = F.embedding(input_ids, self.embed) if inputs_embeds is None else inputs_embeds
        rows, k = x.shape[:2]
        end = start + k
        cos = self.cos[position_ids].unsqueeze(1)  # (B, 1, k, rotary)
        sin = self.sin[position_ids].unsqueeze(1)
        causal = attn_mask is None and k > 1  # a prefill from column 0 (see `attention_mask`)
        heads, dim, width, eps = self.heads, self.head_dim, self.width, self.eps
        for (ln1, ln2, qkv_w, dense, up, down), (keys, values) in zip(
            self.layers, cache, strict=True
        ):
            h = F.layer_norm(x, (width,), ln1[0], ln1[1], eps)
            qkv = F.linear(h, *qkv_w).view(rows, k, heads, 3 * dim).transpose(1, 2)
            q, key, value = qkv.chunk(3, dim=-1)
            q, key = self._rotate(q, cos, sin), self._rotate(key, cos, sin)
            keys[:, :, start:end] = key
            values[:, :, start:end] = value
            attn = F.scaled_dot_product_attention(
                q,
                keys[:, :, :end],
                values[:, :, :end],
                attn_mask=attn_mask,
                is_causal=causal,
                scale=self.scale,
            )
            attn = F.linear(attn.transpose(1, 2).reshape(rows, k, width), *dense)
            if self.parallel:
                h2 = F.layer_norm(x, (width,), ln2[0], ln2[1], eps)
                x = F.linear(self.act(F.linear(h2, *up)), *down) + attn + x
            else:
                attn = attn + x
                h2 = F.layer_norm(attn, (width,), ln2[0], ln2[1], eps)
                x = F.linear(self.act(F.linear(h2, *up)), *down) + attn
        return F.layer_norm(x, (width,), self.final_norm[0], self.final_norm[1], eps)

    def encode(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """The last hidden states (B, P, width) of left-padded prompts (B, P) with their
        attention mask and position ids: one pass over a scratch KV cache."""
        self.cover(int(pos.max()) + 1 if pos.numel() else 0)
        with torch.inference_mode():
            cache = self.new_cache(*ids.shape)
            mask = attention_mask(mask, 0, ids.shape[1])
            states = self.hidden(cache, 0, pos, mask, input_ids=ids)  # (B, P, width)
        return states.clone()  # a normal tensor again, usable outside inference mode


def attention_mask(mask: torch.Tensor, start: int, end: int) -> torch.Tensor | None:
    """The boolean SDPA mask (B, 1, end - start, end) of query columns [start, end) over key
    columns [0, end): a key is seen if it is real (mask 1) and not later than the query. A query
    always sees itself, so padding rows never attend to nothing (their outputs are unused).
    None when every column is real and the columns are one query or a prefill from column 0
    (plainly causal)."""
    keys = mask[:, :end].bool()  # (B, end)
    if (end - start == 1 or start == 0) and bool(keys.all()):
        return None  # one query sees every column; a whole prefill is plainly causal
    columns = torch.arange(end, device=mask.device)
    queries = columns[start:end, None]  # (k, 1)
    allowed = keys[:, None, :] & (columns[None, :] <= queries)[None]  # (B, k, end)
    allowed |= (columns[None, :] == queries)[None]
    return allowed.unsqueeze(1)


class LeanStream:
    """`fsgen.decoding.Stream` for the lean loop, run by `FastNeoX` over a static KV cache of
    `max_len` columns (the prompt width plus the tokens to generate). Pass `fast` to reuse one
    `FastNeoX` across batches.

    Two ways in: `advance(batch)` feeds whatever columns of `batch` it has not seen (Stream's
    contract); `prefill(batch)` then `decode_one_token(tokens)` is the plain decoding loop, which
    keeps its own column count, positions and key mask instead of growing `batch`.
    """

    def __init__(self, model, vocab: int, rows: int, max_len: int, fast: FastNeoX | None = None):
        self.model, self.vocab = model, vocab
        self.fast = fast if fast is not None else FastNeoX(causal_lm(model), positions=max_len)
        self.fast.cover(max_len)
        self.embed_columns = getattr(model, "embed_columns", None)
        self.cache = self.fast.new_cache(rows, max_len)
        self.max_len = max_len
        self.seen = 0
        self.keys: torch.Tensor | None = None  # (B, max_len) real columns, when any is padding
        self.next_positions: torch.Tensor | None = None  # (B, 1)

    @torch.inference_mode()
    def advance(self, batch: Batch) -> torch.Tensor:
        """Feed the columns not yet seen; logits of every fed column (B, k, vocab)."""
        start, end = self.seen, batch.width
        if end > self.max_len:
            raise ValueError(f"the batch has {end} columns, the cache holds {self.max_len}")
        device = self.fast.device
        ids = batch.seq[:, start:end].to(device)
        embeds = self.embed_columns(ids, start) if self.embed_columns is not None else None
        logits = self.fast.forward(
            self.cache,
            start,
            batch.pos[:, start:end].to(device),
            attention_mask(batch.mask.to(device), start, end),
            input_ids=ids if embeds is None else None,
            inputs_embeds=embeds,
        )
        self.seen = end
        return logits[..., : self.vocab].float().to(batch.seq.device)

    def prefill(self, batch: Batch) -> torch.Tensor:
        """Feed a fresh prompt batch; next-token logits (B, vocab). Readies `decode_one_token`."""
        if self.seen:
            raise ValueError(f"prefill needs a fresh stream, this one has seen {self.seen} columns")
        logits = self.advance(batch)[:, -1]  # (B, vocab)
        device = self.fast.device
        prompt = batch.mask.to(device).bool()  # (B, P)
        self.keys = None
        if not bool(prompt.all()):  # some rows are left padded: mask those columns out
            self.keys = torch.ones(prompt.shape[0], self.max_len, dtype=torch.bool, device=device)
            self.keys[:, : prompt.shape[1]] = prompt
        self.next_positions = batch.next_positions().to(device)[:, None]  # (B, 1)
        return logits

    @torch.inference_mode()
    def decode_one_token(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one new token per row (B,) after `prefill`; the next logits (B, vocab).

        The same forward as `advance` on a batch grown by that column: positions continue each
        row's count, every generated column is real, padding stays masked out. Columns past the
        prompt take the model's own embeddings."""
        if self.next_positions is None:
            raise ValueError("decode_one_token needs prefill(batch) first")
        start = self.seen
        if start >= self.max_len:
            raise ValueError(f"the cache holds {self.max_len} columns, all of them are used")
        device = self.fast.device
        keys = None if self.keys is None else self.keys[:, None, None, : start + 1]  # (B,1,1,S)
        logits = self.fast.forward(
            self.cache, start, self.next_positions, keys, input_ids=tokens.to(device)[:, None]
        )  # (B, 1, V)
        self.seen = start + 1
        self.next_positions = self.next_positions + 1
        return logits[:, -1, : self.vocab].float().to(tokens.device)
