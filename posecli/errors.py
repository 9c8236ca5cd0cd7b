"""The one exception type the command line turns into a one-line message."""


class PoseCliError(Exception):
    """A problem the user can fix (bad input, missing weights, unwritable output).

    The CLI prints ``error: <message>`` and exits with code 1; library callers can catch it.
    """
