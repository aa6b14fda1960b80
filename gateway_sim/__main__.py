"""`python -m gateway_sim`: the simulator's command line (see gateway_sim.cli)."""

import sys

from .cli import main

sys.exit(main())
