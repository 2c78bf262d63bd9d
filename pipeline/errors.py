"""The one exception users see: a short, single-line reason that the CLI prints before exiting with status 2."""


class WhosawError(Exception):
    """Bad usage or unreadable input. The message is one line and never contains log contents."""
