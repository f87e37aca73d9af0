"""Errors that stop start-up with a message a user can act on (printed without a traceback)."""


class StartupError(ValueError):
    """The daemon cannot start as configured; the message names the field or file to fix."""
