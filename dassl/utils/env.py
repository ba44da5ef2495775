"""``collect_env_info``: a short, subprocess-free description of the software environment."""
from __future__ import annotations

import platform
import sys


def collect_env_info() -> str:
    """Python, platform, torch (+CUDA/cuDNN), torchvision, NumPy and Pillow versions, one per line."""
    import numpy
    import PIL
    import torch
    import torchvision

    cuda = torch.cuda.is_available()
    rows = [
        ("Python", sys.version.replace("\n", " ")),
        ("Platform", platform.platform()),
        ("PyTorch", torch.__version__),
        ("PyTorch built with CUDA", str(torch.version.cuda)),
        ("CUDA available", str(cuda)),
    ]
    if cuda:
        rows.append(("GPUs", ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))))
        rows.append(("cuDNN", str(torch.backends.cudnn.version())))
    rows += [
        ("torchvision", torchvision.__version__),
        ("NumPy", numpy.__version__),
        ("Pillow", PIL.__version__),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}} : {value}" for name, value in rows)


def torchvision_problem() -> str | None:
    """Why torchvision cannot be used with the installed torch (None: it can).

    A torchvision wheel built for another torch fails on import deep inside its own code
    (``operator torchvision::nms does not exist``); this names the two versions and the fix."""
    try:
        import torchvision  # noqa: F401
    except (RuntimeError, ImportError, OSError, AttributeError) as exc:
        import torch

        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return (f"torchvision cannot be imported with torch {torch.__version__} ({detail}): the installed "
                "torchvision was built for another torch. Install the pair built together, e.g. "
                "pip install --force-reinstall torch torchvision (or the versions of "
                "https://pytorch.org/get-started/previous-versions/ for your CUDA)")
    return None
