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
