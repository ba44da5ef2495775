"""``python -m mmlop <command>``: see ``mmlop/__init__.py``."""
import sys

from dassl.threads import prefer_passive_openmp

prefer_passive_openmp()  # before any command loads torch: idle OpenMP threads sleep instead of spinning

from mmlop import main  # noqa: E402

sys.exit(main())
