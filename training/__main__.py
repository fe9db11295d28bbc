"""``python -m training prepare|train|evaluate|export`` (also installed as ``facegate-train``)."""

import sys

from training.cli import main

sys.exit(main())
