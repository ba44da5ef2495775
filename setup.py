"""pip install -e . installs MMLoP's dependencies.

The code itself is run from the repository root, as in every CoOp-family project. No top-level
package is installed: ``clip``, ``dassl`` and ``datasets`` would otherwise shadow other
distributions (OpenAI's CLIP, Dassl.pytorch, Hugging Face ``datasets``) in the user's environment.
"""
from pathlib import Path

from setuptools import setup


def read_requirements() -> list[str]:
    lines = Path(__file__).with_name("requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


setup(
    name="mmlop",
    version="0.1.0",
    description="MMLoP: Multi-Modal Low-Rank Prompting for CLIP, on a CoOp-compatible code base",
    license="MIT",
    python_requires=">=3.10",
    packages=[],
    py_modules=[],
    install_requires=read_requirements(),
    # scikit-learn: only the tests use it (a reference for the evaluator's macro F1); ruff: the lint.
    # submitit: scripts/sweep.py's Slurm and submitit-local backends (the tests run the latter).
    extras_require={"test": ["pytest>=7", "open-clip-torch>=2.20", "scikit-learn>=1.1", "ruff>=0.6",
                             "submitit>=1.5"],
                    "slurm": ["submitit>=1.5"],
                    # open_clip: MODEL.BACKBONE.NAME open_clip:<model>:<tag or file> (clip/open_clip_models.py).
                    "open_clip": ["open-clip-torch>=2.20"]},
)
