"""`python -m swarmnode` runs the `swarmnode` command (for a checkout or an install without the script on PATH)."""

from swarmnode.cli import main

main()
