"""Offline demo (no download, no GPU): ``python demo.py [--quick] [--ablation] [--seeds ...]
[--datasets ...] [--output DIR]``. See ``proxy/demo.py``."""
import sys

from proxy.demo import main

if __name__ == "__main__":
    sys.exit(main())
