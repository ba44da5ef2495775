"""``python -m trainers.core shell|list ...``: see ``trainers.core.methods``."""
import sys

from .methods import main

sys.exit(main(sys.argv[1:]))
