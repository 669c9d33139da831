"""``python -m pipeline.testing.simulator``: serve the Export API simulator until stopped."""

import sys

from pipeline.testing.simulator.cli import main

sys.exit(main())
