"""The one error class of the project's own refusals: bad input, or a file that cannot be used.

Every refusal minigpt makes on purpose (a value out of range, a missing file, a checkpoint that
does not fit, a run folder in use, a run that diverged) is a `MinigptError`, so the `minigpt`
command prints it as one line, `minigpt: error: ...`. Anything else is a bug, and shows its
traceback. It is a `ValueError`, so `except ValueError` in a caller's code still catches it.
"""


class MinigptError(ValueError):
    """A refusal with a message written for the person who typed the input."""
