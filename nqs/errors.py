"""User-facing errors: one clear line, exit code 2, no traceback."""
from __future__ import annotations

import functools
import sys
from typing import Callable


class UserError(Exception):
    """Bad input: the message says what is wrong and how to fix it."""


EXIT_USAGE = 2


def cli_entry(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a console-script main: a UserError prints `error: <message>` on stderr and exits 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            code = main(*args, **kwargs)
        except UserError as exc:
            sys.stdout.flush()
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(EXIT_USAGE) from None
        except OSError as exc:  # the environment: a full disk, a read-only or vanished folder, permissions
            sys.stdout.flush()
            where = f" {exc.filename}" if exc.filename else ""
            print(f"error: cannot read or write{where} ({exc.strerror or exc}): check the path, its permissions "
                  f"and the free disk space, then run the command again", file=sys.stderr)
            raise SystemExit(EXIT_USAGE) from None
        return 0 if code is None else code

    return wrapper
