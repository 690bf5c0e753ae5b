"""What the command-line scripts share: logging setup, and one way to turn any failure a user can act on
into one sentence and an exit status."""

from __future__ import annotations

import errno
import logging
import re
import signal
import sys
from collections.abc import Callable

from mlic.errors import Interrupted, MlicError
from mlic.io import os_error_cause

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # as a shell reports a command stopped by Ctrl-C


def setup_logging() -> None:
    """Readable INFO logs for mlic; quieter third-party chatter."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.fabric.utilities.rank_zero",
        "onnx_ir",
        "onnxscript",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# A DataLoader worker's exception comes back re-raised with the worker's traceback in its message;
# its last line is "<module>.<Class>: <the original message>".
_WORKER = re.compile(r"Caught \w+ in DataLoader worker process \d+\.")


def one_sentence(error: BaseException) -> str:
    """The message of a user's mistake, without what a loader worker wrapped around it."""
    text = str(error)
    if _WORKER.match(text) and "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = re.sub(r"^[\w.]+: ", "", last.strip())
    return text


def describe(error: BaseException) -> str | None:
    """One sentence for a failure a user can act on; None for a bug (which keeps its traceback)."""
    if isinstance(error, MlicError):
        return one_sentence(error)
    if isinstance(error, OSError):  # a read or write outside mlic's own writers (which raise WriteError)
        where = f"{error.filename}: " if error.filename else ""
        cause = os_error_cause(error) if error.errno != errno.ENOENT else "no such file or folder"
        return f"{where}{cause}"
    if "Weights only load failed" in str(error):  # a torch.load outside mlic's own readers
        return (
            "a file holds Python objects beyond tensors (code that loading would run); mlic does not load it"
        )
    return None


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signal.Signals(signum).name)


def run_cli(main: Callable[[], int], debug: bool) -> int:
    """Set up logging and run `main`. A user's mistake, a file that cannot be written or read, or an error
    a loader worker hit prints `error: <one sentence>` and returns 2 (traceback only with --debug);
    SIGINT or SIGTERM prints one sentence and returns 130. Files already written are kept either way."""
    setup_logging()
    handlers = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return main()
    except (Interrupted, KeyboardInterrupt) as e:
        name = str(e) if isinstance(e, Interrupted) else "SIGINT"
        print(f"interrupted ({name}); files already written are kept", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        message = describe(e)
        if message is None or debug:
            raise
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
