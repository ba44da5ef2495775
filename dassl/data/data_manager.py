"""``DataManager`` (dataset + transforms + loaders) and ``DatasetWrapper`` (Datum -> sample dict)."""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import Compose, Normalize, Resize, ToTensor

from dassl.threads import plan_threads
from dassl.utils.tools import read_image

from .datasets import build_dataset
from .decoded_images import DecodedImageCache, DecodedImages, cache_root, leading_deterministic_steps
from .image_check import check_dataset_images
from .samplers import build_sampler
from .transforms import INTERPOLATION_MODES, build_transform


class DatasetWrapper(Dataset):
    """Item ``idx`` -> ``{"label", "domain", "impath", "index", "img"}`` (plus ``img0`` if asked).

    ``img`` is ``transform(image)``: a tensor [3, H, W] for one transform; with a list of
    transforms the outputs are ``img``, ``img2``, ``img3``...; in training with
    ``DATALOADER.K_TRANSFORMS > 1`` each is a list of K augmented views; without a transform, the
    PIL image. ``img0`` (``DATALOADER.RETURN_IMG0``) is the resized, un-augmented tensor.

    With ``use_cache(cache)`` (``build_data_loader`` does it for ``DATALOADER.CACHE_TEST`` /
    ``CACHE_TRAIN``) the images come from a decoded-image cache that already holds the first
    ``len(cache.steps)`` steps of the transform; the remaining steps run as before, so the
    samples are the same (``dassl.data.decoded_images``). ``open_cache()`` opens or builds it;
    ``CachingDataLoader`` calls it in the main process when an iteration starts.
    """

    def __init__(self, cfg, data_source: Sequence, transform=None, is_train: bool = False) -> None:
        self.cfg = cfg
        self.data_source = data_source
        self.transform = transform
        self.is_train = is_train
        self.k_tfm = cfg.DATALOADER.K_TRANSFORMS if is_train else 1
        self.return_img0 = cfg.DATALOADER.RETURN_IMG0
        if self.k_tfm > 1 and transform is None:
            raise ValueError(f"DATALOADER.K_TRANSFORMS={self.k_tfm} needs a transform, but none is given")
        interp = INTERPOLATION_MODES.get(cfg.INPUT.INTERPOLATION, INTERPOLATION_MODES["bilinear"])
        to_tensor = [Resize(tuple(cfg.INPUT.SIZE), interpolation=interp), ToTensor()]
        if "normalize" in cfg.INPUT.TRANSFORMS:
            to_tensor.append(Normalize(mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD))
        self.to_tensor = Compose(to_tensor)
        self.cache: Optional[DecodedImageCache] = None
        self.images: Optional[DecodedImages] = None
        self._cache_opened = False
        self._rest = transform  # the steps that run after the cache's stage

    def use_cache(self, cache: DecodedImageCache) -> None:
        """Read the images from ``cache`` (opened by ``open_cache``); its ``steps`` must be the
        leading steps of the transform (``cache_for_loader`` picks them)."""
        self.cache, self.images, self._cache_opened = cache, None, False
        skip = len(cache.steps)
        if skip and isinstance(self.transform, Compose):
            self._rest = Compose(self.transform.transforms[skip:])

    def open_cache(self, log: Callable[[str], None] = print) -> None:
        """Open (or build) the cache once; when it cannot be written, images are decoded as usual."""
        if self.cache is not None and not self._cache_opened:
            self.images = self.cache.prepare(log)
            self._cache_opened = True
            if self.images is None:
                self._rest = self.transform

    def __len__(self) -> int:
        return len(self.data_source)

    def __getitem__(self, idx: int) -> dict:
        item = self.data_source[idx]
        output = {"label": item.label, "domain": item.domain, "impath": item.impath, "index": idx}
        img0 = read_image(item.impath) if self.images is None else self.images.image(idx)
        transform = self.transform if self.images is None else self._rest
        if transform is not None:
            if isinstance(transform, (list, tuple)):
                for i, tfm in enumerate(transform):
                    key = "img" if i == 0 else f"img{i + 1}"
                    output[key] = self._transform_image(tfm, img0)
            else:
                output["img"] = self._transform_image(transform, img0)
        else:
            output["img"] = img0
        if self.return_img0:
            output["img0"] = self.to_tensor(img0)
        return output

    def _transform_image(self, tfm: Callable, img0):
        views = [tfm(img0) for _ in range(self.k_tfm)]
        return views[0] if len(views) == 1 else views


class CachingDataLoader(DataLoader):
    """A ``DataLoader`` that lets its dataset open or build its decoded-image cache
    (``open_cache()``) in this process when an iteration starts, before any worker starts: a
    loader that is never iterated (the train loader of ``--eval-only``) builds nothing."""

    def __iter__(self):
        open_cache = getattr(self.dataset, "open_cache", None)
        if open_cache is not None:
            open_cache()
        return super().__iter__()


def cache_for_loader(cfg, dataset: Dataset, split_name: str, is_train: bool) -> Optional[DecodedImageCache]:
    """The decoded-image cache a loader uses, or None: ``DATALOADER.CACHE_TRAIN`` / ``CACHE_TEST``
    (off when absent from the config) for a ``DatasetWrapper`` that reads images with its own
    ``__getitem__`` and has a transform. The stage is the transform's leading resize/center
    crop, none (the decoded image) for a list of transforms or with ``DATALOADER.RETURN_IMG0``
    (``img0`` is made from the decoded image)."""
    enabled = getattr(cfg.DATALOADER, "CACHE_TRAIN" if is_train else "CACHE_TEST", False)
    if not enabled or not isinstance(dataset, DatasetWrapper) or dataset.transform is None or len(dataset) == 0:
        return None
    if type(dataset).__getitem__ is not DatasetWrapper.__getitem__:
        return None
    steps = [] if dataset.return_img0 else leading_deterministic_steps(dataset.transform)
    paths = [item.impath for item in dataset.data_source]
    return DecodedImageCache(cache_root(cfg), cfg.DATASET.NAME, split_name or "data", paths, steps)


def build_data_loader(
    cfg,
    sampler_type: str = "SequentialSampler",
    data_source: Optional[Sequence] = None,
    batch_size: int = 64,
    n_domain: int = 0,
    n_ins: int = 2,
    tfm=None,
    is_train: bool = True,
    dataset_wrapper=None,
    split_name: str = "",
) -> DataLoader:
    """A ``DataLoader`` over ``data_source``; raises ``ValueError`` naming dataset and split if empty.

    ``drop_last`` only in training and only when the split holds at least one batch; workers are
    ``DATALOADER.NUM_WORKERS`` within the cores this process may use (``dassl.threads``);
    ``pin_memory`` only with CUDA; the decoded-image cache per ``cache_for_loader``.
    """
    data_source = list(data_source or [])
    sampler = build_sampler(sampler_type, cfg=cfg, data_source=data_source, batch_size=batch_size, n_domain=n_domain, n_ins=n_ins)
    wrapper = (dataset_wrapper or DatasetWrapper)(cfg, data_source, transform=tfm, is_train=is_train)
    cache = cache_for_loader(cfg, wrapper, split_name, is_train)
    if cache is not None:
        wrapper.use_cache(cache)
    loader = CachingDataLoader(
        wrapper,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=plan_threads(cfg.DATALOADER.NUM_WORKERS).loader_workers,
        drop_last=is_train and len(data_source) >= batch_size,
        pin_memory=bool(torch.cuda.is_available() and cfg.USE_CUDA),
    )
    if len(loader) == 0:
        raise ValueError(
            f"The {split_name or 'data'} loader of dataset {cfg.DATASET.NAME!r} is empty "
            f"({len(data_source)} items, batch size {batch_size}, sampler {sampler_type}); "
            "check DATASET.ROOT and that the split's image folders are populated"
        )
    return loader


class DataManager:
    """Builds the dataset (``build_dataset(cfg)``), the transforms and the train/val/test loaders.

    Attributes: ``dataset``, ``train_loader_x``, ``train_loader_u`` (None unless ``train_u``),
    ``val_loader`` (None without val data), ``test_loader``, and ``num_classes``,
    ``num_source_domains``, ``lab2cname``. Every image the loaders will read is checked first
    (``image_check.check_dataset_images``, ``DATASET.CHECK_IMAGES``), before any model is built.
    """

    def __init__(self, cfg, custom_tfm_train=None, custom_tfm_test=None, dataset_wrapper=None) -> None:
        dataset = build_dataset(cfg)
        check_dataset_images(cfg, dataset)
        if custom_tfm_train is None:
            tfm_train = build_transform(cfg, is_train=True)
        else:
            print("* Using custom transform for training")
            tfm_train = custom_tfm_train
        if custom_tfm_test is None:
            tfm_test = build_transform(cfg, is_train=False)
        else:
            print("* Using custom transform for testing")
            tfm_test = custom_tfm_test

        dl = cfg.DATALOADER
        self.train_loader_x = build_data_loader(
            cfg,
            sampler_type=dl.TRAIN_X.SAMPLER,
            data_source=dataset.train_x,
            batch_size=dl.TRAIN_X.BATCH_SIZE,
            n_domain=dl.TRAIN_X.N_DOMAIN,
            n_ins=dl.TRAIN_X.N_INS,
            tfm=tfm_train,
            is_train=True,
            dataset_wrapper=dataset_wrapper,
            split_name="train_x",
        )
        self.train_loader_u = None
        if dataset.train_u:
            u = dl.TRAIN_X if dl.TRAIN_U.SAME_AS_X else dl.TRAIN_U
            self.train_loader_u = build_data_loader(
                cfg,
                sampler_type=u.SAMPLER,
                data_source=dataset.train_u,
                batch_size=dl.TRAIN_U.BATCH_SIZE,
                n_domain=u.N_DOMAIN,
                n_ins=u.N_INS,
                tfm=tfm_train,
                is_train=True,
                dataset_wrapper=dataset_wrapper,
                split_name="train_u",
            )

        def eval_loader(data_source, split_name: str):
            return build_data_loader(
                cfg,
                sampler_type=dl.TEST.SAMPLER,
                data_source=data_source,
                batch_size=dl.TEST.BATCH_SIZE,
                tfm=tfm_test,
                is_train=False,
                dataset_wrapper=dataset_wrapper,
                split_name=split_name,
            )

        self.val_loader = eval_loader(dataset.val, "val") if dataset.val else None
        self.test_loader = eval_loader(dataset.test, "test")

        self._num_classes = dataset.num_classes
        self._num_source_domains = len(cfg.DATASET.SOURCE_DOMAINS)
        self._lab2cname = dataset.lab2cname
        self.dataset = dataset
        if cfg.VERBOSE:
            self.show_dataset_summary(cfg)

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def num_source_domains(self) -> int:
        return self._num_source_domains

    @property
    def lab2cname(self) -> dict:
        return self._lab2cname

    def show_dataset_summary(self, cfg) -> None:
        """Print Dassl's summary table (tabulate, no headers, thousands separators)."""
        from tabulate import tabulate

        table = [["Dataset", cfg.DATASET.NAME]]
        if cfg.DATASET.SOURCE_DOMAINS:
            table.append(["Source", list(cfg.DATASET.SOURCE_DOMAINS)])
        if cfg.DATASET.TARGET_DOMAINS:
            table.append(["Target", list(cfg.DATASET.TARGET_DOMAINS)])
        table.append(["# classes", f"{self.num_classes:,}"])
        table.append(["# train_x", f"{len(self.dataset.train_x):,}"])
        if self.dataset.train_u:
            table.append(["# train_u", f"{len(self.dataset.train_u):,}"])
        if self.dataset.val:
            table.append(["# val", f"{len(self.dataset.val):,}"])
        table.append(["# test", f"{len(self.dataset.test):,}"])
        print(tabulate(table))
