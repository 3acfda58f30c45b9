"""`python -m genlab.report RUN_DIR [--out FILE]`, the same as `genlab report`."""

import sys

from . import main

main(sys.argv[1:])
