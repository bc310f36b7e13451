"""User-facing errors.

A `RmsdError` is a mistake the user can fix (bad path, bad config, unreadable video):
the CLI prints its message as one line and exits with status 2. Anything else is a bug
and keeps its traceback.
"""


class RmsdError(Exception):
    """An error caused by user input; its message says what is wrong and what to do."""
