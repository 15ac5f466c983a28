"""``python -m common.sweep``: see common.sweep.cli."""
import sys

from common.sweep.cli import main

sys.exit(main())
