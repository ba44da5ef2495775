"""``SplitFileDataset``: the loader shape shared by the datasets that ship a ``split_zhou_*.json``."""
from __future__ import annotations

import os
from typing import Optional

from dassl.data.datasets.base_dataset import DatasetBase

from .protocol import DatasetNotFoundError, doc_ref, finalize_splits, locate_dataset, read_split
from .split_checks import CanonicalNames, folder_classnames


class SplitFileDataset(DatasetBase):
    """Read ``<root>/<dataset_dir>/<split_file>`` with image paths under ``<image_subdir>``.

    Subclasses set ``dataset_dir``, ``image_subdir`` ("" = the dataset folder itself),
    ``split_file`` and ``anchor`` (their section in DATASETS.md). After construction the instance
    has upstream's attributes ``dataset_dir``, ``image_dir``, ``split_path`` and
    ``split_fewshot_dir`` (absolute paths), and ``train_x``/``val``/``test`` after few-shot and
    base/new (``finalize_splits``). A subclass that knows its class names independently of the
    split file overrides ``canonical_classnames`` so that a mismatched split is rejected.
    """

    dataset_dir = ""
    image_subdir = ""
    split_file = ""
    anchor = ""
    # Not None: the class name of an entry is its first path folder, renamed by this map.
    folder_names: Optional[dict] = None

    def __init__(self, cfg) -> None:
        locate_dataset(self, cfg, self.image_subdir, self.anchor)
        self.split_path = os.path.join(self.dataset_dir, self.split_file)
        if not os.path.isfile(self.split_path):
            raise DatasetNotFoundError(
                f"Missing split file: {self.split_path}. Download {self.split_file} from CoOp's DATASETS.md "
                f"(or generate one explicitly with tools/make_split.py; {doc_ref(self.anchor)})"
            )
        train, val, test = read_split(self.split_path, self.image_dir, canonical=self.canonical_classnames())
        train, val, test = finalize_splits(
            cfg, self.dataset_dir, self.image_dir, train, val, test, anchor=self.anchor, source=self.split_path
        )
        super().__init__(train_x=train, val=val, test=test)

    def canonical_classnames(self) -> Optional[CanonicalNames]:
        """Hook: the dataset's own class names to compare the split file with (``None``: unknown).

        Default: the class folders when ``folder_names`` is set (see ``split_checks.CanonicalNames``).
        """
        return None if self.folder_names is None else folder_classnames(self.image_dir, self.folder_names)
