"""FGVC-Aircraft (variant level): `<root>/fgvc_aircraft/`, the `data/` folder of fgvc-aircraft-2013b.

No split JSON: the official partitions are read, as upstream: ``variants.txt`` (one variant per
line, line order = label) and ``images_variant_{train,val,test}.txt`` (``<image id> <variant>``,
variants may contain spaces), images ``images/<id>.jpg``.
"""
from __future__ import annotations

import os

from dassl.data.datasets.base_dataset import DatasetBase, Datum
from dassl.data.datasets.build import DATASET_REGISTRY

from .protocol import doc_ref, finalize_splits, locate_dataset, require_file

ANCHOR = "fgvcaircraft"


def _read_lines(path: str) -> list[str]:
    with open(require_file(path, ANCHOR, "FGVC-Aircraft annotation file")) as f:
        return [line.strip() for line in f if line.strip()]


@DATASET_REGISTRY.register()
class FGVCAircraft(DatasetBase):
    """FGVC-Aircraft, 100 variants, official train/val/test (DATASETS.md#fgvcaircraft)."""

    dataset_dir = "fgvc_aircraft"
    anchor = ANCHOR

    def __init__(self, cfg) -> None:
        locate_dataset(self, cfg, "images", ANCHOR)
        classnames = _read_lines(os.path.join(self.dataset_dir, "variants.txt"))
        cname2lab = {name: label for label, name in enumerate(classnames)}
        train, val, test = (self.read_data(cname2lab, f"images_variant_{s}.txt") for s in ("train", "val", "test"))
        train, val, test = finalize_splits(
            cfg, self.dataset_dir, self.image_dir, train, val, test, anchor=ANCHOR, source="the FGVC-Aircraft lists"
        )
        super().__init__(train_x=train, val=val, test=test)

    def read_data(self, cname2lab: dict[str, int], split_file: str) -> list[Datum]:
        """Items of one ``images_variant_<split>.txt`` file; an unknown variant is an error."""
        path = os.path.join(self.dataset_dir, split_file)
        items = []
        for line in _read_lines(path):
            imname, _, classname = line.partition(" ")
            if classname not in cname2lab:
                raise ValueError(
                    f"{path}: variant {classname!r} of image {imname} is not in variants.txt ({doc_ref(ANCHOR)})"
                )
            items.append(Datum(os.path.join(self.image_dir, imname + ".jpg"), cname2lab[classname],
                               classname=classname))
        return items
