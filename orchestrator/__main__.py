"""`python -m orchestrator` runs the benchfleet command line."""

import sys

from orchestrator.cli import main

sys.exit(main())
