"""`python -m ddakern COMMAND ...`: the `ddakern` command (see ddakern.cli)."""

import sys

from ddakern.cli import main

if __name__ == "__main__":
    sys.exit(main(front="python -m ddakern"))
