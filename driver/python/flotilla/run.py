"""``python3 -m flotilla.run SCRIPT``: runs a test script against the run at
``$FLOTILLA_SOCKET`` with NixOS's globals, and tells the run how it ended: a syntax
error (before anything boots), the script's failure at its file and line, or success.
``flotilla test`` starts it; a person never needs to."""

import os
import sys
import traceback

from .driver import Driver
from .wire import Connection, FlotillaError


def _place(tb, script):
    """The innermost line of ``script`` in a traceback."""
    line = None
    for frame, lineno in traceback.walk_tb(tb):
        if os.path.abspath(frame.f_code.co_filename) == script:
            line = lineno
    return line


def _message(e):
    if isinstance(e, FlotillaError):
        return str(e)
    if isinstance(e, AssertionError) and not str(e):
        return "assertion failed"
    return f"{type(e).__name__}: {e}"


def _traceback(e, script):
    """The traceback's frames in the script (the package's own are left out)."""
    frames = [
        f for f in traceback.extract_tb(e.__traceback__)
        if os.path.abspath(f.filename) == script
    ]
    return "".join(traceback.format_list(frames))


def main(argv):
    if len(argv) != 2:
        print("usage: python3 -m flotilla.run SCRIPT", file=sys.stderr)
        return 2
    script = os.path.abspath(argv[1])
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True)
    connection = Connection.from_env()
    with open(script, "rb") as f:
        source = f.read()
    try:
        code = compile(source, script, "exec")
    except SyntaxError as e:
        connection.call(
            "end",
            syntax={"line": e.lineno or 0, "column": e.offset or 0, "message": e.msg},
        )
        return 2
    driver = Driver(connection)
    scope = driver.globals()
    scope.update({"__name__": "__main__", "__file__": script, "__builtins__": __builtins__})
    sys.path.insert(0, os.path.dirname(script))
    sys.argv = [script]
    try:
        exec(code, scope)
    except SystemExit as e:
        # sys.exit() or sys.exit(0) ends a passing script; another status fails it.
        if e.code in (None, 0):
            connection.call("end")
            return 0
        return _fail(connection, script, e, f"the script called sys.exit({e.code!r})")
    except (Exception, KeyboardInterrupt) as e:
        return _fail(connection, script, e, _message(e))
    connection.call("end")
    return 0


def _fail(connection, script, e, message):
    """Tells the run that the script failed, at its innermost line in the traceback."""
    try:
        connection.call(
            "end",
            error={
                "message": message,
                "line": _place(e.__traceback__, script) or 0,
                "traceback": _traceback(e, script),
            },
        )
    except FlotillaError:
        pass  # the run is gone: it has its own verdict
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
