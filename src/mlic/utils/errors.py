"""The project's exceptions: each carries one sentence a user can act on."""


class MlicError(Exception):
    """A mistake a user can fix; the CLIs print it as `error: <message>` and exit 2."""


class ConfigError(MlicError):
    """The config file or a `--set` override is wrong."""


class DataError(MlicError):
    """A label table or an image is missing or malformed."""


class CheckpointError(MlicError):
    """A weights file or checkpoint cannot be used with this config."""


class WriteError(MlicError):
    """A file could not be written (no space, read-only, not a folder); what was written before is kept."""


class Interrupted(BaseException):  # noqa: N818 - raised by a signal, like KeyboardInterrupt
    """SIGINT or SIGTERM arrived; the CLIs say so in one sentence and exit 130."""
