"""What the command-line scripts share: logging setup and mapping errors to exit codes."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from mlic.errors import MlicError


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


def run_cli(main: Callable[[], int], debug: bool) -> int:
    """Set up logging and run `main`; a user mistake prints `error: <message>` and returns 2 (traceback only
    with --debug)."""
    setup_logging()
    try:
        return main()
    except MlicError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; files already written are kept", file=sys.stderr)
        return 130
