"""One exception type for problems the user can fix (bad spec, missing file, ...).

The CLI prints its message as a single line and exits with status 2; the Python API
simply raises it. Messages name the problem and what to do about it.
"""


class LayercritError(Exception):
    """A user-facing error: the message says what is wrong and how to fix it."""
