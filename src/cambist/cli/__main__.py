"""``python -m cambist.cli``."""

from cambist.cli.main import main

main()
