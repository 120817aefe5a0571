"""The one base class of user-facing errors.

Every error that means "this input, option, config key or output location cannot be used"
derives from `UserError`; its message names the file or key and the problem. Entry scripts
print it as one `error: <message>` line and exit with status 2 (src/cli.py).
"""


class UserError(ValueError):
    """An input, option, config key or output location that cannot be used; str() says which and why."""
