"""``python -m crossfid.cli``."""

from crossfid.cli import main

main()
