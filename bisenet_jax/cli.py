"""How the command-line entry points end: one clear line and a non-zero exit for a user's mistake.

A bad path, field or value raises an exception whose message already names the file, field or value
and what was expected; a traceback wall adds nothing for the person who typed the command. With
``--verbose`` (or ``BISENET_VERBOSE=1``) the full traceback is shown instead.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Callable

from absl import app, flags

from bisenet_jax import allocator

flags.DEFINE_bool("verbose", False, "Show the full traceback of an error (or set BISENET_VERBOSE=1).")

# What a user can fix from the message alone; anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, OSError, KeyError, FloatingPointError, RuntimeError)


def run(main: Callable[[list[str]], None]) -> None:
    """``absl.app.run(main)``, printing user errors as ``error: <message>`` and exiting with status 1.

    First, :func:`bisenet_jax.allocator.enable` (the process may be re-executed once with mimalloc as
    its memory allocator); so call this only as a program's entry point."""
    allocator.enable()
    app.run(lambda argv: _guarded(main, argv))


def _verbose() -> bool:
    verbose = flags.FLAGS.verbose if flags.FLAGS.is_parsed() else "--verbose" in sys.argv
    return verbose or os.environ.get("BISENET_VERBOSE", "") not in ("", "0")


def _on_descriptor_2(stream) -> bool:
    """Whether ``stream`` (Python's stderr) writes to file descriptor 2."""
    try:
        return stream is not None and stream.fileno() == 2
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both of the last two
        return False


def _guarded(main, argv):
    try:
        return main(argv)
    except USER_ERRORS as error:
        if _verbose():
            raise
        message = str(error).strip() or type(error).__name__
        if isinstance(error, KeyError) and message.startswith(("'", '"')):
            message = message[1:-1]
        # From here on, other threads' late reports (the checkpointing library's I/O threads after a failed
        # asynchronous save, "Event loop is closed") go nowhere, so that the message is the last thing printed.
        # Swapping ``sys.stderr`` alone was not enough: a thread that had already taken the stream (a logging
        # handler, a traceback being printed) went on writing after the message (a CI run of
        # tests/train/test_faults.py). So file descriptor 2 itself is pointed at /dev/null, and the message is
        # written to a duplicate of the original taken just before.
        stream = sys.stderr
        for each in (sys.stdout, stream):
            try:
                each.flush()
            except (AttributeError, OSError, ValueError):  # None (started without the descriptor), closed
                pass
        logging.disable(logging.CRITICAL)
        text = f"error: {message}\n(run with --verbose for the traceback)\n"
        if _on_descriptor_2(stream):
            original = os.dup(2)
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 2)
            sys.stderr = os.fdopen(null, "w")
            os.write(original, text.encode())
        else:  # started without stderr (then descriptor 2 may be any file opened since) or with it replaced
            sys.stderr = open(os.devnull, "w")
            try:
                print(text, end="", file=stream if stream is not None else sys.stdout, flush=True)
            except (AttributeError, OSError, ValueError):
                pass
        # Skip the interpreter's teardown: after a failed asynchronous save, background threads of the
        # checkpointing library would otherwise print pages of secondary errors.
        os._exit(1)
