"""Shared pieces of the entry scripts: clear errors instead of tracebacks."""
import sys

from src.audio import AudioError
from src.config import ConfigError

# errors that mean "the user's input is wrong": printed as one message, exit status 2
USER_ERRORS = (AudioError, ConfigError, FileNotFoundError)


def run_main(main, user_errors=()):
    """Call main(); turn the project's own errors into `error: <message>` and exit 2."""
    from src.training.checkpoint import CheckpointError
    known = USER_ERRORS + (CheckpointError,) + tuple(user_errors)
    try:
        status = main()
    except known as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(status or 0)
