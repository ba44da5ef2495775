"""``Datum`` and ``DatasetBase``: the dataset containers that every loader fills."""
from __future__ import annotations

import random
from collections import defaultdict
from typing import Sequence


class Datum:
    """One labelled image: ``impath`` (str), ``label`` (int), ``domain`` (int), ``classname`` (str).

    Unlike Dassl's, the constructor does not stat the file: building ImageNet-scale lists stays
    fast, and a missing image is reported by the loader or by ``read_image`` with its path.
    """

    __slots__ = ("_impath", "_label", "_domain", "_classname")

    def __init__(self, impath: str = "", label: int = 0, domain: int = 0, classname: str = "") -> None:
        if not isinstance(impath, str):
            raise TypeError(f"Datum.impath must be a str, got {type(impath).__name__}")
        self._impath = impath
        self._label = int(label)
        self._domain = int(domain)
        self._classname = classname

    @property
    def impath(self) -> str:
        return self._impath

    @property
    def label(self) -> int:
        return self._label

    @property
    def domain(self) -> int:
        return self._domain

    @property
    def classname(self) -> str:
        return self._classname

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Datum):
            return NotImplemented
        return (self._impath, self._label, self._domain, self._classname) == (
            other._impath,
            other._label,
            other._domain,
            other._classname,
        )

    def __hash__(self) -> int:
        return hash((self._impath, self._label, self._domain, self._classname))

    def __repr__(self) -> str:
        return f"Datum(impath={self._impath!r}, label={self._label}, domain={self._domain}, classname={self._classname!r})"


class DatasetBase:
    """Holds ``train_x``, ``train_u``, ``val`` and ``test`` lists of ``Datum``.

    ``num_classes``, ``lab2cname`` and ``classnames`` are derived from ``train_x``, as in Dassl;
    unlike Dassl, a label missing from ``train_x`` (which would silently misalign prompts and
    classes) raises ``ValueError``.
    """

    dataset_dir = ""
    domains: list[str] = []

    def __init__(self, train_x=None, train_u=None, val=None, test=None) -> None:
        self._train_x = train_x
        self._train_u = train_u
        self._val = val
        self._test = test
        self._num_classes = self.get_num_classes(train_x) if train_x else 0
        self._lab2cname, self._classnames = self.get_lab2cname(train_x) if train_x else ({}, [])
        if train_x and len(self._classnames) != self._num_classes:
            missing = sorted(set(range(self._num_classes)) - set(self._lab2cname))
            raise ValueError(
                f"{type(self).__name__}: labels {missing[:10]} have no training image; "
                "every label in 0..num_classes-1 must appear in train_x"
            )

    @property
    def train_x(self):
        return self._train_x

    @property
    def train_u(self):
        return self._train_u

    @property
    def val(self):
        return self._val

    @property
    def test(self):
        return self._test

    @property
    def lab2cname(self) -> dict[int, str]:
        return self._lab2cname

    @property
    def classnames(self) -> list[str]:
        return self._classnames

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @staticmethod
    def get_num_classes(data_source: Sequence[Datum]) -> int:
        """``max(label) + 1`` over ``data_source``."""
        return max(item.label for item in data_source) + 1

    @staticmethod
    def get_lab2cname(data_source: Sequence[Datum]) -> tuple[dict[int, str], list[str]]:
        """Label -> class-name map, and the class names ordered by ascending label."""
        mapping = {item.label: item.classname for item in data_source}
        labels = sorted(mapping)
        return {label: mapping[label] for label in labels}, [mapping[label] for label in labels]

    @staticmethod
    def split_dataset_by_label(data_source: Sequence[Datum]) -> dict[int, list[Datum]]:
        """Group items by label, in first-appearance order."""
        output: dict[int, list[Datum]] = defaultdict(list)
        for item in data_source:
            output[item.label].append(item)
        return output

    @staticmethod
    def split_dataset_by_domain(data_source: Sequence[Datum]) -> dict[int, list[Datum]]:
        """Group items by domain, in first-appearance order."""
        output: dict[int, list[Datum]] = defaultdict(list)
        for item in data_source:
            output[item.domain].append(item)
        return output

    def generate_fewshot_dataset(self, *data_sources, num_shots: int = -1, repeat: bool = False):
        """Take ``num_shots`` items per label from each source with Python's global ``random``.

        Labels are visited in first-appearance order and sampled with ``random.sample`` (or
        ``random.choices`` when ``repeat`` and a label has fewer items), so the draw matches
        Dassl's for the same seed and list order. Returns one list per source (a bare list for one).
        """
        if num_shots < 1:
            return data_sources[0] if len(data_sources) == 1 else data_sources
        print(f"Creating a {num_shots}-shot dataset")
        output = []
        for data_source in data_sources:
            dataset: list[Datum] = []
            for items in self.split_dataset_by_label(data_source).values():
                if len(items) >= num_shots:
                    dataset.extend(random.sample(items, num_shots))
                elif repeat:
                    dataset.extend(random.choices(items, k=num_shots))
                else:
                    dataset.extend(items)
            output.append(dataset)
        return output[0] if len(output) == 1 else output
