"""pip install -e . installs MMLoP's dependencies and makes its packages importable from anywhere.

So ``python scripts/sweep.py``, ``python tools/make_split.py``, ``python bench/bench_mmlop.py`` and
``python -m mmlop <command>`` find the code from any directory without editing ``sys.path``. The
install is editable only (``-e``): setuptools then maps exactly these names to this checkout through
an import hook that Python consults after ``sys.path``, so an installed OpenAI CLIP, Dassl.pytorch
or Hugging Face ``datasets`` is not shadowed (outside the repository root they win over ours), and
``python train.py`` from the repository root finds this checkout first, as in every CoOp-family
project.
"""
import sys
from pathlib import Path

from setuptools import find_packages, setup

if "bdist_wheel" in sys.argv:   # pip install . (not -e) builds a wheel
    sys.exit("error: install MMLoP editable, pip install -e . : a wheel would copy top-level clip, dassl and "
             "datasets packages into site-packages, over OpenAI's CLIP, Dassl.pytorch or Hugging Face datasets")

PACKAGES = ("clip", "dassl", "datasets", "trainers", "proxy", "sweep", "mmlop", "tools")


def read_requirements() -> list[str]:
    lines = Path(__file__).with_name("requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


setup(
    name="mmlop",
    version="0.1.0",
    description="MMLoP: Multi-Modal Low-Rank Prompting for CLIP, on a CoOp-compatible code base",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=[f"{name}{tail}" for name in PACKAGES for tail in ("", ".*")]),
    py_modules=["train", "parse_test_res"],   # the CoOp-family entry points, for python -m mmlop
    package_data={"clip": ["*.txt.gz"]},
    install_requires=read_requirements(),
    # scikit-learn: only the tests use it (a reference for the evaluator's macro F1); ruff: the lint.
    # submitit: scripts/sweep.py's Slurm and submitit-local backends (the tests run the latter).
    extras_require={"test": ["pytest>=7", "open-clip-torch>=2.20", "scikit-learn>=1.1", "ruff>=0.6",
                             "submitit>=1.5"],
                    "slurm": ["submitit>=1.5"],
                    # open_clip: MODEL.BACKBONE.NAME open_clip:<model>:<tag or file> (clip/open_clip_models.py).
                    "open_clip": ["open-clip-torch>=2.20"]},
)
