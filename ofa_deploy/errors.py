"""The one exception type the CLI turns into a single line on stderr."""


class OfaError(Exception):
    """Bad input or an unusable environment, explained in one sentence.

    Library code raises this for anything a user can fix (a malformed subnet spec, a
    missing checkpoint, an unknown target); the CLI prints ``ofa-deploy: error: <message>``
    and exits with status 2 instead of showing a traceback.
    """


class Terminated(BaseException):
    """The process was asked to stop (``SIGTERM``): the CLI prints the message in one line
    and exits 143 (128 + 15). A ``BaseException``, like ``KeyboardInterrupt``, so that no
    ``except Exception`` on the way out swallows it."""


class Interrupted(Terminated):
    """A command stopped by Ctrl-C that has something to say about it (where its work so far
    is kept): the CLI prints the message in one line and exits 130 (128 + 2), as for a
    plain ``KeyboardInterrupt``."""
