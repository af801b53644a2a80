"""The one base class of the errors a user's mistake raises."""


class UserError(ValueError):
    """A mistake of the user's: an option, a file, a puzzle, a checkpoint that does not fit.

    Every entry script catches it once and prints its message as one ``error:`` line with exit
    status 2, without a traceback; each concern raises its own subclass (``ConfigError``,
    ``DatasetError``, ``CheckpointError``, ``PuzzleError``, ...). A ``ValueError`` so that callers
    that caught ``ValueError`` before it existed still do.
    """
