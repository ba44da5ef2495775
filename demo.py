"""Offline demo and proxy benchmark (no download, no GPU): ``python demo.py [--quick] [--ablation]
[--full] [--protocol base2new dg xd few_shot ablation] [--methods ...] [--seeds ...] [--datasets ...]
[--output DIR] [--workers N]``. See ``proxy/demo.py``."""
import sys

from dassl.threads import prefer_passive_openmp

prefer_passive_openmp()  # before torch is loaded: idle OpenMP threads sleep instead of spinning

from proxy.demo import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
