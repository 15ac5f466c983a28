"""``python -m common.compare``: see common.compare.summary."""
import sys

from common.compare.summary import main

sys.exit(main())
