"""Shared pieces of the entry scripts: one `error:` line instead of a traceback.

Every entry script runs its main() through `run_main`: a `UserError` (src/errors.py: config,
data, audio, checkpoint, output location, ...) is printed as `error: <message>` with exit
status 2. `--debug` on any entry script's command line, or `GDPRNN_DEBUG=1` in the environment,
shows the traceback instead.
"""
import os
import sys

from src.errors import UserError

DEBUG_FLAG = "--debug"
DEBUG_ENV = "GDPRNN_DEBUG"


def run_main(main):
    """Call main() (which parses sys.argv without `--debug`) and exit with its status; a
    UserError -> `error: <message>` on stderr, exit 2 (re-raised in debug mode)."""
    debug = DEBUG_FLAG in sys.argv[1:] or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    sys.argv = [sys.argv[0]] + [arg for arg in sys.argv[1:] if arg != DEBUG_FLAG]
    try:
        status = main()
    except UserError as err:
        if debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(status or 0)
