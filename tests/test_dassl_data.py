"""DataManager, DatasetWrapper, build_transform and samplers on a generated toy dataset."""
from __future__ import annotations

import os

import pytest
import torch
from PIL import Image
from torchvision.transforms import CenterCrop, Normalize, RandomHorizontalFlip, RandomResizedCrop, Resize, ToTensor

from dassl.config import get_cfg_default
from dassl.data import DataManager, DatasetWrapper, build_sampler
from dassl.data.datasets import DATASET_REGISTRY, DatasetBase, Datum
from dassl.data.transforms import AVAI_CHOICES, build_transform

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


@DATASET_REGISTRY.register()
class ToyDataTestSet(DatasetBase):
    """``DATASET.ROOT/<label>_<i>.png``; train 4 per class x 2 classes, test 3 images, no val."""

    def __init__(self, cfg) -> None:
        root = cfg.DATASET.ROOT
        names = ["cat", "dog"]
        train = [Datum(os.path.join(root, f"{c}_{i}.png"), c, domain=i % 2, classname=names[c])
                 for c in range(2) for i in range(4)]
        test = train[:3] if cfg.DATASET.NUM_SHOTS != 0 else []
        super().__init__(train_x=train, test=test)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("toy_data")
    for c in range(2):
        for i in range(4):
            Image.new("RGB", (12, 10), (60 * c, 20 * i, 90)).save(root / f"{c}_{i}.png")
    return str(root)


def cfg_for(root: str, **opts):
    cfg = get_cfg_default()
    cfg.DATASET.ROOT = root
    cfg.DATASET.NAME = "ToyDataTestSet"
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.INPUT.SIZE = (8, 8)
    cfg.INPUT.TRANSFORMS = ("random_resized_crop", "random_flip", "normalize")
    cfg.USE_CUDA = False
    for key, value in opts.items():
        node = cfg
        *path, last = key.split("__")
        for part in path:
            node = node[part]
        node[last] = value
    return cfg


def test_clip_transforms_match_the_coop_pipeline(capsys):
    cfg = get_cfg_default()
    cfg.INPUT.INTERPOLATION = "bicubic"
    cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD = CLIP_MEAN, CLIP_STD
    cfg.INPUT.TRANSFORMS = ("random_resized_crop", "random_flip", "normalize")
    train = build_transform(cfg, is_train=True)
    test = build_transform(cfg, is_train=False)
    assert [type(t) for t in train.transforms] == [RandomResizedCrop, RandomHorizontalFlip, ToTensor, Normalize]
    assert train.transforms[0].size == (224, 224) and train.transforms[0].scale == (0.08, 1.0)
    assert train.transforms[0].interpolation.value == "bicubic"
    assert [type(t) for t in test.transforms] == [Resize, CenterCrop, ToTensor, Normalize]
    assert test.transforms[0].size == 224 and test.transforms[1].size == (224, 224)
    assert test.transforms[3].mean == CLIP_MEAN
    out = capsys.readouterr().out
    for line in ("Building transform_train", "+ random resized crop (size=(224, 224), scale=(0.08, 1.0))",
                 "+ random flip", "+ to torch tensor of range [0, 1]", "Building transform_test",
                 "+ resize the smaller edge to 224", "+ 224x224 center crop"):
        assert line in out
    img = Image.new("RGB", (300, 250), (10, 200, 30))
    assert test(img).shape == (3, 224, 224) and train(img).shape == (3, 224, 224)


@pytest.mark.parametrize("choice", AVAI_CHOICES)
def test_every_listed_choice_builds_and_runs(choice):
    cfg = get_cfg_default()
    cfg.INPUT.SIZE = (16, 16)
    cfg.INPUT.GB_K = 3
    cfg.INPUT.CUTOUT_LEN = 4
    img = Image.new("RGB", (20, 18), (120, 60, 30))
    for is_train in (True, False):
        out = build_transform(cfg, is_train=is_train, choices=[choice])(img)
        assert out.shape == (3, 16, 16) and out.dtype == torch.float32


def test_unknown_transform_is_named():
    cfg = get_cfg_default()
    cfg.INPUT.TRANSFORMS = ("random_flip", "mixup")
    with pytest.raises(ValueError, match="'mixup'"):
        build_transform(cfg)


def test_no_transform_returns_none(capsys):
    cfg = get_cfg_default()
    cfg.INPUT.NO_TRANSFORM = True
    assert build_transform(cfg) is None
    assert "Note: no transform is applied!" in capsys.readouterr().out


def test_data_manager_loaders_wrapper_and_summary(root, capsys):
    dm = DataManager(cfg_for(root, DATALOADER__TRAIN_X__BATCH_SIZE=3, DATALOADER__TEST__BATCH_SIZE=2,
                             DATALOADER__NUM_WORKERS=10_000))
    out = capsys.readouterr().out
    assert "Loading dataset: ToyDataTestSet" in out
    assert "---------  --------------\nDataset    ToyDataTestSet\n# classes  2\n# train_x  8\n# test     3\n" in out
    assert dm.num_classes == 2 and dm.lab2cname == {0: "cat", 1: "dog"} and dm.dataset.classnames == ["cat", "dog"]
    assert dm.val_loader is None and dm.train_loader_u is None
    assert len(dm.train_loader_x) == 2  # 8 images, batch 3, drop_last
    assert len(dm.test_loader) == 2  # 3 images, batch 2, keep the last
    assert dm.train_loader_x.num_workers <= (os.cpu_count() or 1)
    assert dm.train_loader_x.pin_memory is False
    batch = next(iter(dm.test_loader))
    assert batch["img"].shape == (2, 3, 8, 8) and batch["label"].tolist() == [0, 0]
    assert batch["index"].tolist() == [0, 1] and batch["impath"][0].endswith("0_0.png")
    assert set(batch) == {"img", "label", "domain", "impath", "index"}


def test_small_train_set_keeps_its_only_batch(root):
    dm = DataManager(cfg_for(root, DATALOADER__TRAIN_X__BATCH_SIZE=32, VERBOSE=False))
    assert len(dm.train_loader_x) == 1 and next(iter(dm.train_loader_x))["img"].shape[0] == 8


def test_empty_split_names_dataset_and_split(root):
    with pytest.raises(ValueError, match=r"test loader of dataset 'ToyDataTestSet' is empty"):
        DataManager(cfg_for(root, DATASET__NUM_SHOTS=0, VERBOSE=False))


def test_wrapper_k_transforms_and_img0(root):
    cfg = cfg_for(root, DATALOADER__K_TRANSFORMS=2, DATALOADER__RETURN_IMG0=True)
    data = DataManager(cfg_for(root, VERBOSE=False)).dataset.train_x
    item = DatasetWrapper(cfg, data, transform=build_transform(cfg), is_train=True)[5]
    assert isinstance(item["img"], list) and len(item["img"]) == 2 and item["img"][0].shape == (3, 8, 8)
    assert item["img0"].shape == (3, 8, 8) and item["label"] == 1 and item["index"] == 5


def test_samplers(root):
    data = DataManager(cfg_for(root, VERBOSE=False)).dataset.train_x
    assert list(build_sampler("SequentialSampler", data_source=data)) == list(range(8))
    assert sorted(build_sampler("RandomSampler", data_source=data)) == list(range(8))
    by_class = list(build_sampler("RandomClassSampler", data_source=data, batch_size=4, n_ins=2))
    assert len(by_class) == 8
    for start in range(0, 8, 4):
        labels = [data[i].label for i in by_class[start : start + 4]]
        assert sorted(labels) == [0, 0, 1, 1]
    seq_dom = list(build_sampler("SeqDomainSampler", data_source=data, batch_size=4))
    assert [data[i].domain for i in seq_dom] == [0, 0, 1, 1, 0, 0, 1, 1]
    rand_dom = list(build_sampler("RandomDomainSampler", data_source=data, batch_size=4, n_domain=2))
    assert sorted(rand_dom) == list(range(8))
    assert all(sorted(data[i].domain for i in rand_dom[s : s + 4]) == [0, 0, 1, 1] for s in (0, 4))
    one_domain = list(build_sampler("RandomDomainSampler", data_source=data, batch_size=2, n_domain=1))
    assert len(one_domain) >= 2 and all(data[one_domain[s]].domain == data[one_domain[s + 1]].domain
                                        for s in range(0, len(one_domain), 2))
    with pytest.raises(ValueError, match="Unknown sampler type: Foo"):
        build_sampler("Foo", data_source=data)
