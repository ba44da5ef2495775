"""Fixtures shared by several test files (pytest finds them here without an import)."""
from __future__ import annotations

import os

from dassl.threads import prefer_passive_openmp

# Before torch is loaded: idle OpenMP threads sleep instead of spinning, in this process and in
# the train.py subprocesses, so the suite keeps its pace on a machine shared with other work.
prefer_passive_openmp()

import pytest  # noqa: E402
import torch  # noqa: E402

from dassl.utils.tools import CACHE_DIR_ENV, mmlop_cache_dir  # noqa: E402

# The machine's cache (``$MMLOP_CACHE_DIR``, else ``~/.cache/mmlop``), read before the session
# fixture below points the variable elsewhere.
MACHINE_CACHE_DIR = mmlop_cache_dir()


@pytest.fixture(scope="session", autouse=True)
def _session_cache_dir(tmp_path_factory):
    """``$MMLOP_CACHE_DIR`` in the session's temporary folder unless the environment sets it, so the
    decoded-image caches of the tests' throw-away datasets never pile up in ``~/.cache/mmlop``."""
    if not os.environ.get(CACHE_DIR_ENV):
        os.environ[CACHE_DIR_ENV] = str(tmp_path_factory.getbasetemp() / "mmlop_cache")


@pytest.fixture(scope="session")
def tiny_clip_dir() -> str:
    """Where the proxy tests find (or pretrain) the tiny CLIP: the machine's cache, the one
    ``python demo.py`` uses, so the demo and the suite pretrain it once between them (the file name
    keys everything the weights depend on)."""
    return MACHINE_CACHE_DIR


@pytest.fixture(scope="module")
def vit_b16():
    """CLIP ViT-B/16 with random weights (``torch.manual_seed(0)``), in eval mode; one per test module."""
    from clip.model import CLIP, MODEL_CONFIGS

    torch.manual_seed(0)
    return CLIP(**MODEL_CONFIGS["ViT-B/16"]).eval()


# The toy dataset and trainer config of tests/toy_run.py (train.py end to end).
@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> str:
    from PIL import Image

    from tests.toy_run import CLASSNAMES, COLORS

    root = tmp_path_factory.mktemp("toy_colors")
    counts = {"train": 8, "val": 2, "test": 5}
    gen = torch.Generator().manual_seed(0)
    for split, n in counts.items():
        for cname, color in zip(CLASSNAMES, COLORS):
            folder = root / split / cname
            folder.mkdir(parents=True)
            for i in range(n):
                noise = torch.randint(-110, 111, (8, 8, 3), generator=gen)
                pixels = (torch.tensor(color).view(1, 1, 3) + noise).clamp(0, 255).to(torch.uint8)
                Image.fromarray(pixels.numpy()).save(folder / f"{i:03d}.png")
    return str(root)


@pytest.fixture
def trainer_yaml(tmp_path) -> str:
    path = tmp_path / "toy.yaml"
    path.write_text(
        "DATALOADER:\n  NUM_WORKERS: 0\n  TRAIN_X:\n    BATCH_SIZE: 4\n  TEST:\n    BATCH_SIZE: 8\n"
        "INPUT:\n  SIZE: (8, 8)\n  TRANSFORMS: ['random_flip', 'normalize']\n"
        "OPTIM:\n  NAME: 'sgd'\n  LR: 0.01\n  MAX_EPOCH: 4\n  LR_SCHEDULER: 'cosine'\n"
        "  WARMUP_EPOCH: 1\n  WARMUP_TYPE: 'constant'\n  WARMUP_CONS_LR: 1e-5\n"
        "TRAIN:\n  PRINT_FREQ: 10\n"
    )
    return str(path)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a test module of tiny in-process runs (``pytestmark =
    pytest.mark.usefixtures("one_thread")``): avoids oversubscribing shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
