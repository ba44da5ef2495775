"""CLIP's byte-level BPE tokenizer.

Text is cleaned (``ftfy.fix_text``, HTML unescaping applied twice, whitespace collapsed,
lower-cased), split into words with CLIP's regular expression, each word's UTF-8 bytes are mapped
to printable characters and merged with the BPE ranks of ``bpe_simple_vocab_16e6.txt.gz``
(OpenAI's vocabulary file, shipped beside this module). The vocabulary has 49,408 entries:
256 byte symbols, the same 256 with the end-of-word marker ``</w>``, 48,894 merges, then
``<|startoftext|>`` = 49406 and ``<|endoftext|>`` = 49407.
"""
from __future__ import annotations

import functools
import gzip
import html
import os

import ftfy
import regex

__all__ = ["SimpleTokenizer", "default_bpe", "bytes_to_unicode", "get_pairs",
           "basic_clean", "whitespace_clean"]

SOT = "<|startoftext|>"
EOT = "<|endoftext|>"
_N_MERGES = 49152 - 256 - 2   # merges used by CLIP: the first lines after the header
_WORD_CACHE_SIZE = 1 << 16


def default_bpe() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "bpe_simple_vocab_16e6.txt.gz")


@functools.lru_cache
def bytes_to_unicode() -> dict[int, str]:
    """Reversible map from the 256 byte values to printable unicode characters.

    Printable Latin-1 bytes map to themselves; the others (control characters, space, ...) map to
    code points 256, 257, ... in byte order, so BPE never sees whitespace or control characters.
    """
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    others = [b for b in range(256) if b not in printable]
    codes = printable + [256 + i for i in range(len(others))]
    return {b: chr(c) for b, c in zip(printable + others, codes)}


def get_pairs(word: tuple[str, ...]) -> set[tuple[str, str]]:
    """Set of adjacent symbol pairs in ``word``."""
    return set(zip(word[:-1], word[1:]))


def basic_clean(text: str) -> str:
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))
    return text.strip()


def whitespace_clean(text: str) -> str:
    return regex.sub(r"\s+", " ", text).strip()


class SimpleTokenizer:
    """CLIP's tokenizer: ``encode(text) -> list[int]``, ``decode(ids) -> str``."""

    def __init__(self, bpe_path: str | None = None):
        bpe_path = bpe_path or default_bpe()
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        with gzip.open(bpe_path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1:1 + _N_MERGES]]
        symbols = list(self.byte_encoder.values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [SOT, EOT]
        self.encoder: dict[str, int] = {tok: i for i, tok in enumerate(vocab)}
        self.decoder: dict[int, str] = {i: tok for tok, i in self.encoder.items()}
        self.bpe_ranks: dict[tuple[str, str], int] = {m: i for i, m in enumerate(merges)}
        self.sot_token = self.encoder[SOT]
        self.eot_token = self.encoder[EOT]
        self.vocab_size = len(vocab)
        self.pat = regex.compile(
            r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|"""
            r"""[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE)
        # Per-instance cache of word -> space-separated BPE symbols.
        self.bpe = functools.lru_cache(maxsize=_WORD_CACHE_SIZE)(self._bpe)

    def _bpe(self, token: str) -> str:
        """BPE-merge one word (already byte-mapped); returns its symbols joined by spaces."""
        if token in (SOT, EOT):
            return token
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        ranks = self.bpe_ranks
        while len(word) > 1:
            pairs = get_pairs(word)
            best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
            if best not in ranks:
                break
            first, second = best
            merged = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        return " ".join(word)

    def clean(self, text: str) -> str:
        """The normalisation applied before tokenizing: ftfy, HTML unescape, whitespace, lower."""
        return whitespace_clean(basic_clean(text)).lower()

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for word in regex.findall(self.pat, self.clean(text)):
            mapped = "".join(self.byte_encoder[b] for b in word.encode("utf-8"))
            ids.extend(self.encoder[sym] for sym in self.bpe(mapped).split(" "))
        return ids

    def decode(self, tokens) -> str:
        text = "".join(self.decoder[int(t)] for t in tokens)
        data = bytearray(self.byte_decoder[c] for c in text)
        return data.decode("utf-8", errors="replace").replace("</w>", " ")
