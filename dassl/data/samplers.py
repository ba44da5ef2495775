"""Batch-composition samplers and ``build_sampler`` (Dassl's names and arguments)."""
from __future__ import annotations

import copy
import random
from collections import defaultdict
from typing import Iterator, Sequence

from torch.utils.data.sampler import RandomSampler, Sampler, SequentialSampler

AVAI_SAMPLERS = ["RandomSampler", "SequentialSampler", "RandomDomainSampler", "SeqDomainSampler", "RandomClassSampler"]


def _group_indices(data_source: Sequence, attr: str) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = defaultdict(list)
    for i, item in enumerate(data_source):
        groups[getattr(item, attr)].append(i)
    return groups


def _draw(pool: list[int], n: int) -> list[int]:
    """``random.sample(pool, n)``, removed from ``pool``."""
    picked = random.sample(pool, n)
    for idx in picked:
        pool.remove(idx)
    return picked


class RandomDomainSampler(Sampler):
    """Each batch takes ``batch_size // n_domain`` random items from each of ``n_domain`` random domains."""

    def __init__(self, data_source: Sequence, batch_size: int, n_domain: int) -> None:
        self.domain_dict = _group_indices(data_source, "domain")
        self.domains = list(self.domain_dict)
        if n_domain is None or n_domain <= 0:
            n_domain = len(self.domains)
        if batch_size % n_domain != 0:
            raise ValueError(f"batch_size ({batch_size}) must be divisible by n_domain ({n_domain})")
        if n_domain > len(self.domains):
            raise ValueError(f"n_domain ({n_domain}) exceeds the number of domains ({len(self.domains)})")
        self.n_img_per_domain = batch_size // n_domain
        self.n_domain = n_domain
        self.length = len(list(self.__iter__()))

    def __iter__(self) -> Iterator[int]:
        domain_dict = copy.deepcopy(self.domain_dict)
        final_idxs: list[int] = []
        while True:
            selected = random.sample(self.domains, self.n_domain)
            if any(len(domain_dict[d]) < self.n_img_per_domain for d in selected):
                break
            for d in selected:
                final_idxs.extend(_draw(domain_dict[d], self.n_img_per_domain))
        return iter(final_idxs)

    def __len__(self) -> int:
        return self.length


class SeqDomainSampler(Sampler):
    """Each batch takes ``batch_size // n_domains`` random items from every domain, in domain order."""

    def __init__(self, data_source: Sequence, batch_size: int) -> None:
        self.domain_dict = _group_indices(data_source, "domain")
        self.domains = sorted(self.domain_dict)
        n_domain = len(self.domains)
        if batch_size % n_domain != 0:
            raise ValueError(f"batch_size ({batch_size}) must be divisible by the number of domains ({n_domain})")
        self.n_img_per_domain = batch_size // n_domain
        self.length = len(list(self.__iter__()))

    def __iter__(self) -> Iterator[int]:
        domain_dict = copy.deepcopy(self.domain_dict)
        final_idxs: list[int] = []
        while all(len(domain_dict[d]) >= self.n_img_per_domain for d in self.domains):
            for d in self.domains:
                final_idxs.extend(_draw(domain_dict[d], self.n_img_per_domain))
        return iter(final_idxs)

    def __len__(self) -> int:
        return self.length


class RandomClassSampler(Sampler):
    """Each batch holds ``batch_size // n_ins`` random classes with ``n_ins`` items each."""

    def __init__(self, data_source: Sequence, batch_size: int, n_ins: int) -> None:
        if batch_size < n_ins or batch_size % n_ins != 0:
            raise ValueError(f"batch_size ({batch_size}) must be a multiple of n_ins ({n_ins})")
        self.index_dic = _group_indices(data_source, "label")
        self.labels = list(self.index_dic)
        self.n_ins = n_ins
        self.ncls_per_batch = batch_size // n_ins
        self.length = len(list(self.__iter__()))

    def __iter__(self) -> Iterator[int]:
        chunks: dict[int, list[list[int]]] = defaultdict(list)
        for label in self.labels:
            idxs = list(self.index_dic[label])
            if len(idxs) < self.n_ins:
                idxs = random.choices(idxs, k=self.n_ins)
            random.shuffle(idxs)
            for start in range(0, len(idxs) - self.n_ins + 1, self.n_ins):
                chunks[label].append(idxs[start : start + self.n_ins])
        avai = [label for label in self.labels if chunks[label]]
        final_idxs: list[int] = []
        while len(avai) >= self.ncls_per_batch:
            for label in random.sample(avai, self.ncls_per_batch):
                final_idxs.extend(chunks[label].pop(0))
                if not chunks[label]:
                    avai.remove(label)
        return iter(final_idxs)

    def __len__(self) -> int:
        return self.length


def build_sampler(
    sampler_type: str,
    cfg=None,
    data_source: Sequence = (),
    batch_size: int = 32,
    n_domain: int = 0,
    n_ins: int = 2,
) -> Sampler:
    """A sampler over ``data_source`` (a list of ``Datum``) by Dassl name; unknown -> ``ValueError``."""
    if sampler_type == "RandomSampler":
        return RandomSampler(data_source)
    if sampler_type == "SequentialSampler":
        return SequentialSampler(data_source)
    if sampler_type == "RandomDomainSampler":
        return RandomDomainSampler(data_source, batch_size, n_domain)
    if sampler_type == "SeqDomainSampler":
        return SeqDomainSampler(data_source, batch_size)
    if sampler_type == "RandomClassSampler":
        return RandomClassSampler(data_source, batch_size, n_ins)
    raise ValueError(f"Unknown sampler type: {sampler_type} (choose from {AVAI_SAMPLERS})")
