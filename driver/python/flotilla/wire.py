"""The connection to a Flotilla run: JSON lines over a Unix socket.

The run sends a greeting line first; then each request is one line and each answer one
line with the same ``id``. The protocol is documented in the book's "Python scripts"
chapter (and in ``driver/src/python/mod.rs``), so that a client in another language is
a small file.
"""

import json
import os
import socket
import sys
import threading

PROTOCOL = 1


class FlotillaError(Exception):
    """A call the run refused or that failed in a machine (a command's exit status, a
    timeout, a dead machine). The message is the run's, with its causes."""


class Connection:
    """One connection to a run; calls are answered in order, one at a time."""

    def __init__(self, path):
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.connect(path)
        except OSError as e:
            raise FlotillaError(f"cannot reach the run at {path}: {e}") from None
        self._reader = self._sock.makefile("rb")
        self._lock = threading.Lock()
        self._next = 0
        self.hello = self._read()
        if self.hello.get("protocol") != PROTOCOL:
            raise FlotillaError(
                f"the run at {path} speaks protocol {self.hello.get('protocol')!r}, "
                f"this package {PROTOCOL}"
            )

    @classmethod
    def from_env(cls):
        """The run named by ``$FLOTILLA_SOCKET`` (set by ``flotilla test``)."""
        path = os.environ.get("FLOTILLA_SOCKET")
        if not path:
            raise FlotillaError(
                "FLOTILLA_SOCKET is not set: run the script with `flotilla test SPEC`"
            )
        return cls(path)

    def _read(self):
        line = self._reader.readline()
        if not line:
            raise FlotillaError("the run closed the connection (the driver ended)")
        return json.loads(line)

    def call(self, call, machine=None, **args):
        """Sends one request and returns its answer's value; raises FlotillaError with
        the run's message when it failed."""
        with self._lock:
            self._next += 1
            request = {"id": self._next, "call": call, "args": args}
            if machine is not None:
                request["machine"] = machine
            at = caller()
            if at is not None:
                request["at"] = at
            self._sock.sendall(json.dumps(request).encode() + b"\n")
            answer = self._read()
        if answer.get("id") != request["id"]:
            raise FlotillaError(f"answer {answer.get('id')} to request {request['id']}")
        if "error" in answer:
            raise FlotillaError(answer["error"])
        return answer.get("value")

    def close(self):
        """Closes the connection (the run sees its end at once)."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._reader.close()
        self._sock.close()


_HERE = os.path.dirname(os.path.abspath(__file__))


def caller():
    """The script's line that made the current call: the innermost frame outside this
    package, as {"file", "line"}."""
    frame = sys._getframe(1)
    while frame is not None:
        path = frame.f_code.co_filename
        if not os.path.abspath(path).startswith(_HERE + os.sep):
            return {"file": path, "line": frame.f_lineno}
        frame = frame.f_back
    return None
