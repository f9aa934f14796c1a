"""pytest plugin: the ``flotilla`` fixture starts a spec's machines for one test, with
a log folder and ``report.html`` of its own, and ends them with the test's verdict.

    import pytest

    @pytest.mark.flotilla("../examples/hello")      # relative to the test file
    def test_kernel(flotilla):
        out = flotilla["machine"].succeed("uname -r")
        assert "cloud" in out

Installed with pip (``pip install driver/python``), pytest loads it by itself;
otherwise ``pytest -p flotilla.pytest_plugin`` with the package on ``PYTHONPATH``.
The fixture runs ``flotilla test SPEC --attach SOCKET`` (``--flotilla-bin``, or
``$FLOTILLA_BIN``, else ``flotilla`` on PATH) with its log folder
``<--flotilla-out>/<test>`` (default ``flotilla-out/pytest``), connects, and yields
the run's ``Driver``: its machines by name (``flotilla["server"]``), ``start_all``,
``subtest``, ``retry`` and the rest. A test that fails fails the run at its line; a
run that fails after the test passed (a helper that died) fails the test's teardown.
"""

import os
import re
import subprocess
import tempfile
import time
import traceback

import pytest

from .driver import connect


def pytest_addoption(parser):
    group = parser.getgroup("flotilla")
    group.addoption(
        "--flotilla-out",
        default=os.path.join("flotilla-out", "pytest"),
        help="folder of the tests' log folders (default flotilla-out/pytest)",
    )
    group.addoption(
        "--flotilla-bin",
        default=os.environ.get("FLOTILLA_BIN", "flotilla"),
        help="the flotilla program (default $FLOTILLA_BIN, else flotilla on PATH)",
    )


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "flotilla(spec): the spec whose machines the `flotilla` fixture starts"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if call.when == "call":
        item._flotilla_excinfo = call.excinfo


def _spec(request):
    marker = request.node.get_closest_marker("flotilla")
    if marker is None or not marker.args:
        raise pytest.UsageError(
            f"{request.node.nodeid}: the flotilla fixture needs @pytest.mark.flotilla(SPEC)"
        )
    return os.path.join(os.path.dirname(str(request.node.fspath)), marker.args[0])


def _failure(excinfo, test_file):
    """The error of a failed test: its message, and its innermost line in the test file."""
    line = 0
    for frame in traceback.extract_tb(excinfo.tb):
        if os.path.abspath(frame.filename) == test_file:
            line = frame.lineno
    message = excinfo.exconly()
    return message, line


@pytest.fixture
def flotilla(request):
    """The run of the test's spec (``@pytest.mark.flotilla(SPEC)``): its Driver."""
    spec = _spec(request)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.nodeid).strip("-")
    out = os.path.join(request.config.getoption("--flotilla-out"), name)
    socket_dir = tempfile.mkdtemp(prefix="flotilla-pytest-")
    socket = os.path.join(socket_dir, "run.sock")
    command = [
        request.config.getoption("--flotilla-bin"), "test", spec,
        "--attach", socket, "--out", out, "--quiet",
    ]
    log = open(os.path.join(socket_dir, "flotilla.log"), "w+")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    # Images are built (or taken from the cache) before the run listens.
    while not os.path.exists(socket):
        if process.poll() is not None:
            log.seek(0)
            pytest.fail(f"flotilla test {spec} ended before the test could attach:\n{log.read()}")
        time.sleep(0.05)
    try:
        driver = connect(socket)
        request.node.user_properties.append(("flotilla_log", out))
        yield driver
        excinfo = getattr(request.node, "_flotilla_excinfo", None)
        if excinfo is None:
            driver.end()
        else:
            message, line = _failure(excinfo, os.path.abspath(str(request.node.fspath)))
            driver.end(message, file=str(request.node.fspath), line=line)
        status = process.wait()
        log.seek(0)
        output = log.read()
        if status != 0 and excinfo is None:
            pytest.fail(f"the run failed after the test (logs in {out}):\n{output}")
    finally:
        # Interrupted (Ctrl-C, an error above): the run stops its machines on SIGTERM.
        if process.poll() is None:
            process.terminate()
            process.wait()
        log.close()
