"""What the command-line scripts share: logging setup, and one way to turn any failure a user can act on
into one sentence and an exit status."""

from __future__ import annotations

import errno
import logging
import re
import signal
import sys
from collections.abc import Callable

import torch.distributed as dist
from tqdm import tqdm

from mlic.utils.errors import Interrupted, MlicError
from mlic.utils.io import os_error_cause
from mlic.utils.ranks import global_rank, process_index

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # as a shell reports a command stopped by Ctrl-C


class BarSafeHandler(logging.StreamHandler):
    """Log lines written around the progress bars (tqdm clears a bar, writes the line, redraws it), so a
    line never lands on a bar's line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging's own contract: a failing handler reports, never raises
            self.handleError(record)


def setup_logging() -> None:
    """Readable INFO logs for mlic; quieter third-party chatter. With several processes only the first
    logs below ERROR: the others would repeat its lines."""
    level = logging.INFO if global_rank() == 0 else logging.ERROR
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", handlers=[BarSafeHandler()]
    )
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


def printable(text: str) -> str:
    """`text` on one line: control characters that came in with a user's names (a newline in a column
    name, a tab in an id) written as escapes, `\\n`, `\\t`."""
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: repr(m.group())[1:-1], text.strip())


def one_sentence(error: BaseException) -> str:
    """The message of a user's mistake, without what a loader worker wrapped around it, on one line."""
    text = str(error)
    if _WORKER.match(text) and "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = re.sub(r"^[\w.]+: ", "", last.strip())
    return printable(text)


def describe(error: BaseException) -> str | None:
    """One sentence for a failure a user can act on; None for a bug (which keeps its traceback)."""
    if isinstance(error, MlicError):
        return one_sentence(error)
    if isinstance(error, OSError):  # a read or write outside mlic's own writers (which raise WriteError)
        where = f"{error.filename}: " if error.filename else ""
        cause = os_error_cause(error) if error.errno != errno.ENOENT else "no such file or folder"
        return printable(f"{where}{cause}")
    if "Weights only load failed" in str(error):  # a torch.load outside mlic's own readers
        return (
            "a file holds Python objects beyond tensors (code that loading would run); mlic does not load it"
        )
    return None


# What a collective (gloo, NCCL, the rendezvous store) raises in a process whose peer has stopped
_PEER_GONE = re.compile(
    r"closed by peer|remote worker|connection reset|broken pipe|communicator was aborted|timed? ?out",
    re.IGNORECASE,
)
PEER_FAILED = "another process of this job failed (its own error says why), so this one stopped too"


def peer_failed(error: BaseException) -> bool:
    """True for the error a process gets when another process of its multi-process job has died: the
    collective it was waiting in breaks."""
    if not (dist.is_available() and dist.is_initialized()):
        return False
    return isinstance(error, dist.DistError) or (
        isinstance(error, RuntimeError) and bool(_PEER_GONE.search(str(error)))
    )


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signal.Signals(signum).name)


def run_cli(main: Callable[[], int], debug: bool, every_process: bool = False) -> int:
    """Set up logging and run `main`. A user's mistake, a file that cannot be written or read, or an error
    a loader worker hit prints `error: <one sentence>` and returns 2 (traceback only with --debug);
    SIGINT or SIGTERM prints one sentence and returns 130. Files already written are kept either way.

    Under a launcher of several processes (torchrun, srun) only the first runs `main` unless
    `every_process` (train.py, which trains on all of them). There, a process that fails names itself
    (`error: process 1: ...`) and the others, whose collectives break, say so in one line: each returns 2.
    """
    if not every_process and process_index() != 0:
        return 0
    setup_logging()
    handlers = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return main()
    except (Interrupted, KeyboardInterrupt) as e:
        name = str(e) if isinstance(e, Interrupted) else "SIGINT"
        print(f"interrupted ({name}); files already written are kept", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        message = describe(e) or (PEER_FAILED if peer_failed(e) else None)
        if message is None or debug:
            raise
        where = f"process {global_rank()}: " if global_rank() else ""
        print(f"error: {where}{message}", file=sys.stderr)
        return EXIT_USER_ERROR
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
