"""The one base class of user-facing errors, and the up-front checks of output locations.

Every error that means "this input, option, config key or output location cannot be used"
derives from `UserError`; its message names the file or key and the problem. Entry scripts
print it as one `error: <message>` line and exit with status 2 (src/cli.py).
"""
import os
import tempfile


class UserError(ValueError):
    """An input, option, config key or output location that cannot be used; str() says which and why."""


class OutputError(UserError):
    """An output location that cannot be created or written."""


def check_output_dir(path, what="--out-dir"):
    """Make sure `path` is (or can be created as) a writable folder, before any expensive work.

    Creates the missing folders and a probe file, then removes what it created, so a refused run
    leaves nothing behind. Raises OutputError naming the option (`what`) and the path.
    """
    _check_dir(os.path.abspath(path), f"{what} {path}", names_path=True)


def check_output_file(path, what="output"):
    """Make sure the file `path` can be written (its folder as in check_output_dir, and `path` is
    not a folder). Raises OutputError."""
    if os.path.isdir(path):
        raise OutputError(f"{what} {path}: is a folder, not a file name")
    _check_dir(os.path.dirname(os.path.abspath(path)), f"{what} {path}", names_path=False)


def _check_dir(path, label, names_path):
    """check_output_dir for the folder `path`; messages start with `label` (which names `path`
    itself when `names_path`)."""
    created, folder = [], path
    while not os.path.isdir(folder):
        if os.path.exists(folder):
            culprit = "" if names_path and folder == path else f"{folder} "
            raise OutputError(f"{label}: {culprit}is a file, not a folder")
        created.append(folder)
        folder = os.path.dirname(folder)
    try:
        for folder in reversed(created):
            os.mkdir(folder)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write_test")
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise OutputError(f"{label}: cannot write there ({err.strerror or err})") from None
    finally:
        for folder in created:
            if os.path.isdir(folder) and not os.listdir(folder):
                os.rmdir(folder)
