"""Polling conditions, as in NixOS's driver: ``@polling_condition`` makes a function a
condition that holds inside ``with condition:`` blocks, checked before every call to a
machine (at most every ``seconds_interval``). A condition that raises or returns False
fails the call with PollingConditionError; calls the condition makes are not checked
again."""

import time

from .wire import FlotillaError


class PollingConditionError(FlotillaError):
    """A polling condition did not hold."""


class PollingCondition:
    def __init__(self, check, seconds_interval=2.0, description=None):
        self.condition = check
        self.seconds_interval = seconds_interval
        if description is None:
            description = check.__doc__ or check.__name__
        self.description = str(description).strip()
        self.last_called = float("-inf")
        self.entry_count = 0

    def check(self, force=False):
        """Runs the condition if it is due; returns whether it held."""
        overdue = self.last_called + self.seconds_interval < time.monotonic()
        if (self.entry_count > 0 or not overdue) and not force:
            return True
        self.entry_count += 1
        try:
            result = self.condition()
        except Exception:
            result = False
        finally:
            self.entry_count -= 1
            self.last_called = time.monotonic()
        return result is None or bool(result)

    def maybe_raise(self):
        if not self.check():
            raise PollingConditionError(f"Polling condition failed: {self.description}")


class Conditions:
    """The conditions in force now (innermost last)."""

    def __init__(self):
        self.active = []

    def check(self):
        for condition in list(self.active):
            condition.maybe_raise()

    def decorator(self, retry):
        """The script's ``polling_condition``: ``@polling_condition`` or
        ``@polling_condition(seconds_interval=10, description="...")``."""
        conditions = self

        def polling_condition(fun_=None, *, seconds_interval=2.0, description=None):
            def wrap(fun):
                return Poll(conditions, retry, PollingCondition(fun, seconds_interval, description))

            return wrap(fun_) if fun_ is not None else wrap

        return polling_condition


class Poll:
    """What ``@polling_condition`` leaves under the function's name: a context manager
    in force inside its block, and ``wait`` until it holds."""

    def __init__(self, conditions, retry, condition):
        self._conditions = conditions
        self._retry = retry
        self.condition = condition

    def __enter__(self):
        self._conditions.active.append(self.condition)

    def __exit__(self, *exc):
        self._conditions.active.remove(self.condition)
        return False

    def wait(self, timeout=900):
        self._retry(lambda last: self.condition.check(force=True), timeout)
