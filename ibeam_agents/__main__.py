"""`python -m ibeam_agents`: the same as the `ibeam` command."""

from ibeam_agents.cli import main

raise SystemExit(main())
