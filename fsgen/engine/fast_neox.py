"""A lean GPT-NeoX forward (gpt-fast / nanoGPT style), on an HF model's own weights.

For small models most of the time of an HF forward pass is Python and dispatch overhead
(embedding and rotary modules, mask construction, cache bookkeeping, module hooks), not
arithmetic. `FastNeoX` runs the same weights of a `GPTNeoXForCausalLM` with plain tensor calls:
a preallocated static KV cache per layer (B, heads, length, head_dim), rotary cos/sin tables
computed once, and attention through `torch.nn.functional.scaled_dot_product_attention` with an
explicit boolean mask (left padding, rejected drafts) built from the batch's attention mask. The
math is HF's (layer norms, parallel or sequential residual, rotary on the first
`partial_rotary_factor` of each head, `hidden_act`, final layer norm, `embed_out`), op for op, so
float32 logits agree with HF's to rounding. `fsgen.engine.forward` runs it as the engine's
forward for every GPT-NeoX model; `supports(model)` says whether a model can take this path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from transformers import GPTNeoXForCausalLM
from transformers.activations import ACT2FN


def causal_lm(model):
    """The GPT-NeoX causal LM behind `model` (itself, or a wrapper's `causal_lm`)."""
    return getattr(model, "causal_lm", model)


def supports(model) -> bool:
    """Whether `model` (or the causal LM it wraps) is a GPT-NeoX causal LM `FastNeoX` can run."""
    lm = causal_lm(model)
    if not isinstance(lm, GPTNeoXForCausalLM):
        return False
    rope = getattr(lm.config, "rope_parameters", None) or {}
    return rope.get("rope_type", "default") == "default"


class FastNeoX:
    """The weights of a `GPTNeoXForCausalLM`, run by a lean forward with a static KV cache;
    rotary tables cover `positions` (at least the model's `max_position_embeddings`)."""

    def __init__(self, model, positions: int = 0):
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
        keep: int = 0,
    ) -> torch.Tensor:
        """Logits (B, k, V) of columns [start, start + k), or of the last `keep` of them (0:
        all): writes their keys and values into `cache` and attends over cache columns
        [0, start + k) under `attn_mask` (a boolean (B, 1, k, start + k), True where attending;
        None: every earlier column, causal)."""
        x = self.hidden(cache, start, position_ids, attn_mask, input_ids, inputs_embeds)
        if keep:
            x = x[:, -keep:]  # (B, keep, width): the head runs on these columns only
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
