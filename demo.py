"""Offline demo and proxy benchmark (no download, no GPU): ``python demo.py [--quick] [--ablation]
[--full] [--protocol base2new dg xd few_shot ablation] [--methods ...] [--seeds ...] [--datasets ...]
[--output DIR] [--workers N]``. See ``proxy/demo.py``."""
import sys

from proxy.demo import main

if __name__ == "__main__":
    sys.exit(main())
