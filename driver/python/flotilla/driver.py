"""The run as a script sees it: its machines and the globals of NixOS's driver
(``start_all``, ``join_all``, ``subtest``, ``retry``, ``polling_condition``,
``serial_stdout_on``/``off``, ``machines``, ``vlans``, ``t``), and Flotilla's own
(``log``, ``partition``, ``heal``, ``capture_vlan``, ``http_get``)."""

import contextlib
import time
import unittest

from .conditions import Conditions
from .machine import Machine
from .wire import Connection, FlotillaError


class Driver:
    """A connection to a run, with its machines."""

    def __init__(self, connection):
        self.connection = connection
        self.conditions = Conditions()
        hello = connection.hello
        self.machines = [Machine(self, m["name"], m.get("vlans", [])) for m in hello["machines"]]
        self.vlans = list(hello.get("vlans", []))
        self.out_dir = hello.get("out_dir")
        self.polling_condition = self.conditions.decorator(self.retry)

    # Calls to the run. A machine's calls check the polling conditions first.
    def call(self, call, **args):
        return self.connection.call(call, **args)

    def machine_call(self, machine, call, **args):
        self.conditions.check()
        return self.connection.call(call, machine=machine, **args)

    def __getitem__(self, name):
        """The machine ``name``: ``driver["server"]``."""
        return self.machine(name)

    def end(self, error=None, file=None, line=0, traceback=""):
        """Ends an attached run (``flotilla test --attach``) with its verdict: passed,
        or failed with ``error`` (a message) at ``file``:``line``."""
        if error is None:
            self.call("end")
        else:
            failure = {"message": str(error), "line": line, "traceback": traceback}
            if file is not None:
                failure["file"] = str(file)
            self.call("end", error=failure)
        self.connection.close()

    def machine(self, name):
        for m in self.machines:
            if m.name == name:
                return m
        raise FlotillaError(f"no machine `{name}` in this run")

    def start_all(self):
        """Boots every machine, in parallel."""
        self.call("start_all")

    def join_all(self):
        """Waits until every machine has powered off."""
        for m in self.machines:
            m.wait_for_shutdown()

    @contextlib.contextmanager
    def subtest(self, name):
        """A named, timed section of the run, in the report and in JUnit."""
        token = self.call("subtest_begin", name=name)
        try:
            yield
        except BaseException as e:
            self.call("subtest_end", token=token, failure=_describe(e))
            raise
        self.call("subtest_end", token=token, failure=None)

    def retry(self, fn, timeout=900):
        """Calls ``fn(last_try)`` once a second until it returns true; the last try is
        called with True; raises when even that fails (NixOS's ``retry``)."""
        for _ in range(int(timeout)):
            if fn(False):
                return
            time.sleep(1)
        if not fn(True):
            raise FlotillaError(
                f"action timed out after {int(timeout)} tries with one-second pause in-between"
            )

    def serial_stdout_on(self):
        """Accepted for NixOS's scripts; changes nothing: every console line is in the
        run's log (``driver.log``, ``<machine>/console.log``) already."""

    def serial_stdout_off(self):
        """Accepted for NixOS's scripts; changes nothing (see serial_stdout_on)."""

    def log(self, text):
        """A line in the run's log."""
        self.call("log", text=str(text))

    @property
    def logger(self):
        """The script's ``log``: called with a text, or NixOS's ``log.info(...)``."""
        return _Logger(self)

    def partition(self, vlan, groups):
        """Splits VLAN ``vlan`` into groups of machines that only reach each other."""
        names = [[m.name if isinstance(m, Machine) else m for m in g] for g in groups]
        self.call("partition", vlan=vlan, groups=names)

    def heal(self, vlan):
        self.call("heal", vlan=vlan)

    def capture_vlan(self, vlan):
        """Every frame on the VLAN to ``<log>/vlan<N>.pcap``; returns the path."""
        return self.call("capture_vlan", vlan=vlan)

    def http_get(self, url):
        """The body at ``http://127.0.0.1:PORT/...`` (a forwarded port)."""
        return self.call("http_get", url=url)

    def globals(self):
        """What a script sees: the machines by name, and the driver's functions."""
        names = {
            "driver": self,
            "machines": self.machines,
            "vlans": self.vlans,
            "start_all": self.start_all,
            "join_all": self.join_all,
            "subtest": self.subtest,
            "retry": self.retry,
            "polling_condition": self.polling_condition,
            "serial_stdout_on": self.serial_stdout_on,
            "serial_stdout_off": self.serial_stdout_off,
            "log": self.logger,
            "partition": self.partition,
            "heal": self.heal,
            "capture_vlan": self.capture_vlan,
            "http_get": self.http_get,
            "t": unittest.TestCase(),
            "Machine": Machine,
            "FlotillaError": FlotillaError,
        }
        for m in self.machines:
            if m.name.isidentifier():
                names[m.name] = m
        if len(self.machines) == 1 and "machine" not in names:
            names["machine"] = self.machines[0]
        return names


class _Logger:
    """``log("text")``, ``log.info("text")``, ``log.warning(...)``, ``log.error(...)``:
    a line in the run's log."""

    def __init__(self, driver):
        self._driver = driver

    def __call__(self, text):
        self._driver.log(text)

    def info(self, text):
        self._driver.log(text)

    def warning(self, text):
        self._driver.log(f"warning: {text}")

    def error(self, text):
        self._driver.log(f"error: {text}")

    log = info


def _describe(e):
    text = str(e)
    return f"{type(e).__name__}: {text}" if not isinstance(e, FlotillaError) else text


def connect(path=None):
    """A driver for the run at ``path`` (default: ``$FLOTILLA_SOCKET``)."""
    connection = Connection(path) if path else Connection.from_env()
    return Driver(connection)
