"""Flotilla's Python scripts: the machines of a running Flotilla test with the names
and meanings of NixOS's test driver (``machine.succeed(...)``,
``machine.wait_for_unit("nginx")``, ``with subtest("..."):``).

``flotilla test`` runs a spec whose ``script`` is a ``.py`` file with this package
(written into the run, no pip needed): each machine is a global named after it, beside
``start_all``, ``subtest``, ``retry``, ``polling_condition``, ``machines``, ``t`` and
the rest (``flotilla.run``). A program of its own reaches a run with
``flotilla.connect()``.
"""

from .conditions import PollingConditionError
from .driver import Driver, connect
from .machine import Machine
from .wire import FlotillaError

__all__ = ["Driver", "FlotillaError", "Machine", "PollingConditionError", "connect"]
