"""The one exception type for user mistakes.

The CLI prints a `UserError` as a single line and exits with status 2 (no traceback): bad config keys,
missing or unreadable files, impossible sizes. Programming errors stay ordinary exceptions.
"""


class UserError(Exception):
    """A mistake the user can fix; its message is the whole explanation, on one line."""
