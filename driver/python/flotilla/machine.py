"""A machine of the run, with the names and meanings of NixOS's ``Machine``.

Time limits are in seconds (``timeout=``), NixOS's defaults unless told; the spec's
``timeout`` bounds the whole test all the same. Each call is a step of the run's
timeline, and a failing one raises FlotillaError with the run's message."""

import os
import re
import shlex
import time

from .wire import FlotillaError

#: NixOS's default limit of commands and waits.
DEFAULT_TIMEOUT = 900


class Machine:
    def __init__(self, driver, name, vlans):
        self._driver = driver
        self.name = name
        self.vlans = list(vlans)

    def __repr__(self):
        return f"<Machine '{self.name}'>"

    def _call(self, call, **args):
        return self._driver.machine_call(self.name, call, **args)

    # Power.
    def start(self, allow_reboot=False):
        """Boots the machine (commands boot it on first use too)."""
        self._call("start")

    def is_up(self):
        return bool(self._call("is_up"))

    def shutdown(self, timeout=60):
        """Powers the guest off and waits until QEMU has exited."""
        self._call("shutdown", timeout=timeout)

    def crash(self):
        """Stops QEMU at once, like a power cut."""
        self._call("crash")

    def reboot(self, timeout=60):
        self._call("reboot", timeout=timeout)

    def wait_for_shutdown(self, timeout=DEFAULT_TIMEOUT):
        """Waits until the guest has powered itself off."""
        self._call("wait_for_shutdown", timeout=timeout)

    # Commands.
    def execute(self, command, check_return=True, check_output=True, timeout=DEFAULT_TIMEOUT):
        """Runs a shell command; returns (status, stdout). A command killed by a signal
        has status 128 + the signal; with check_return=False the status is -1, with
        check_output=False the output is empty."""
        r = self._call("execute", command=command, timeout=timeout)
        status = r["status"] if check_return else -1
        return status, (r["stdout"] if check_output else "")

    def succeed(self, *commands, timeout=None):
        """Runs each command, which must exit 0; returns their stdout joined."""
        return "".join(self._call("succeed", command=c, timeout=timeout) for c in commands)

    def fail(self, *commands, timeout=None):
        """Runs each command, which must fail; returns their stdout joined."""
        return "".join(self._call("fail", command=c, timeout=timeout) for c in commands)

    def wait_until_succeeds(self, command, timeout=DEFAULT_TIMEOUT):
        return self._call("wait_until_succeeds", command=command, timeout=timeout)

    def wait_until_fails(self, command, timeout=DEFAULT_TIMEOUT):
        return self._call("wait_until_fails", command=command, timeout=timeout)

    def sleep(self, secs):
        time.sleep(secs)

    # systemd.
    def systemctl(self, q, user=None):
        """``systemctl q``, or ``systemctl --user q`` as ``user``; returns (status, stdout)."""
        if user is None:
            return self.execute(f"systemctl {q}")
        inner = f"XDG_RUNTIME_DIR=/run/user/$(id -u) systemctl --user {q}"
        return self.execute(f"su -l {shlex.quote(user)} --shell /bin/sh -c {shlex.quote(inner)}")

    def get_unit_info(self, unit, user=None):
        """``systemctl show unit`` as a dict."""
        status, lines = self.systemctl(f'--no-pager show "{unit}"', user)
        if status != 0:
            raise FlotillaError(
                f'retrieving systemctl info for unit "{unit}"'
                + ("" if user is None else f' under user "{user}"')
                + f" failed with exit code {status}"
            )
        info = {}
        for line in lines.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                info[key] = value
        return info

    def get_unit_property(self, unit, property, user=None):
        status, lines = self.systemctl(f'--no-pager show "{unit}" --property="{property}"', user)
        if status != 0:
            raise FlotillaError(
                f'retrieving systemctl property "{property}" for unit "{unit}" failed '
                f"with exit code {status}"
            )
        key, _, value = lines.strip().partition("=")
        if key != property:
            raise FlotillaError(f'systemctl show printed "{lines.strip()}" for "{property}"')
        return value

    def require_unit_state(self, unit, require_state="active"):
        state = self.get_unit_info(unit)["ActiveState"]
        if state != require_state:
            raise FlotillaError(
                f"Expected unit '{unit}' to to be in state '{require_state}' but it is in "
                f"state '{state}'"
            )

    def wait_for_unit(self, unit, user=None, timeout=DEFAULT_TIMEOUT):
        """Waits until a systemd unit is active; fails at once when it failed (or is
        inactive with no job pending)."""
        if user is None:
            self._call("wait_for_unit", unit=unit, timeout=timeout)
            return
        deadline = time.monotonic() + timeout
        while True:
            info = self.get_unit_info(unit, user)
            state = info["ActiveState"]
            if state == "failed":
                raise FlotillaError(f'unit "{unit}" of user "{user}" reached state "failed"')
            if state == "inactive" and info.get("Job", "") == "":
                status, jobs = self.systemctl("list-jobs --full 2>&1", user)
                if "No jobs" in jobs:
                    raise FlotillaError(
                        f'unit "{unit}" of user "{user}" is inactive and there are no '
                        "pending jobs"
                    )
            if state == "active":
                return
            if time.monotonic() >= deadline:
                raise FlotillaError(
                    f'unit "{unit}" of user "{user}" not active within {timeout} s '
                    f'(state "{state}")'
                )
            time.sleep(1)

    def start_job(self, jobname, user=None):
        return self.systemctl(f"start {jobname}", user)

    def stop_job(self, jobname, user=None):
        return self.systemctl(f"stop {jobname}", user)

    # Waits.
    def wait_for_file(self, filename, timeout=DEFAULT_TIMEOUT):
        self._call("wait_for_file", path=filename, timeout=timeout)

    def wait_for_open_port(self, port, addr="localhost", timeout=DEFAULT_TIMEOUT):
        """Waits until a TCP port listens: on the guest itself, or at ``addr`` (then
        with ``nc -z``, which the guest needs: netcat-openbsd)."""
        if _is_local(addr):
            self._call("wait_for_open_port", port=port, timeout=timeout)
        else:
            self.wait_until_succeeds(f"nc -z {shlex.quote(addr)} {int(port)}", timeout)

    def wait_for_closed_port(self, port, addr="localhost", timeout=DEFAULT_TIMEOUT):
        if _is_local(addr):
            self._call("wait_for_closed_port", port=port, timeout=timeout)
        else:
            self.wait_until_fails(f"nc -z {shlex.quote(addr)} {int(port)}", timeout)

    def wait_for_open_unix_socket(self, addr, is_datagram=False, timeout=DEFAULT_TIMEOUT):
        """Waits until a Unix socket accepts (``nc -z -U``; the guest needs
        netcat-openbsd)."""
        flags = "-uzU" if is_datagram else "-zU"
        self.wait_until_succeeds(f"nc {flags} {shlex.quote(addr)}", timeout)

    # Console.
    def wait_for_console_text(self, regex, timeout=None):
        """Waits for a console line matching ``regex`` (earlier lines count); returns
        the line."""
        return self._call("wait_for_console_text", regex=regex, timeout=timeout)

    def get_console_log(self):
        return self._call("get_console_log")

    def send_console(self, chars):
        """Types ``chars`` on the serial console."""
        self._call("send_console", chars=chars)

    # Screen and keyboard (machines with ``display = true``).
    def screenshot(self, filename):
        """Saves the screen as ``<log>/<machine>/<filename>.png``; returns the path."""
        return self._call("screenshot", name=filename)

    def get_screen_text(self):
        return self._call("get_screen_text")

    def get_screen_text_ocr(self):
        return self._call("get_screen_text_ocr")

    def get_screen_text_variants(self):
        """The screen's text read from three pictures of it (OCR)."""
        return self._call("get_screen_text_variants")

    def wait_for_text(self, regex, timeout=DEFAULT_TIMEOUT):
        return self._call("wait_for_text", regex=regex, timeout=timeout)

    def wait_for_text_ocr(self, regex, timeout=DEFAULT_TIMEOUT):
        return self._call("wait_for_text_ocr", regex=regex, timeout=timeout)

    def send_key(self, key, delay=0.01, log=True):
        self._call("send_key", key=key)
        if delay:
            time.sleep(delay)

    def send_chars(self, chars, delay=0.01):
        self._call("send_chars", chars=chars, delay=delay)

    def get_tty_text(self, tty):
        """The text of virtual console ``tty`` (``/dev/vcs<tty>``), in lines."""
        return self.succeed(
            f"fold -w$(stty -F /dev/tty{int(tty)} size | awk '{{print $2}}') /dev/vcs{int(tty)}"
        )

    def wait_until_tty_matches(self, tty, regexp, timeout=DEFAULT_TIMEOUT):
        deadline = time.monotonic() + timeout
        text = ""
        while True:
            text = self.get_tty_text(tty)
            if re.search(regexp, text):
                return
            if time.monotonic() >= deadline:
                raise FlotillaError(
                    f"tty{tty} did not match `{regexp}` within {timeout} s; it shows:\n{text}"
                )
            time.sleep(1)

    def dump_tty_contents(self, tty):
        self._driver.log(self.get_tty_text(tty))

    def wait_for_x(self, timeout=DEFAULT_TIMEOUT):
        raise FlotillaError("wait_for_x needs NixOS's X11 set-up; wait for a unit or text instead")

    def wait_for_window(self, regexp, timeout=DEFAULT_TIMEOUT):
        raise FlotillaError("wait_for_window needs NixOS's X11 set-up (xwininfo); use wait_for_text")

    # QEMU.
    def send_monitor_command(self, command):
        """A human monitor (HMP) command; returns its output."""
        return self._call("send_monitor_command", command=command)

    def wait_for_qmp_event(self, event_filter, timeout=600):
        """Waits for a QMP event ({"event", "data", "timestamp"}) for which
        ``event_filter`` returns true; events from this call on count."""
        deadline = time.monotonic() + timeout
        stream = self._call("qmp_subscribe")
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise FlotillaError(f"no matching QMP event within {timeout} s")
                event = self._call("qmp_next_event", stream=stream, timeout=left)
                if event is not None and event_filter(event):
                    return event
        finally:
            self._call("qmp_unsubscribe", stream=stream)

    # Files.
    def copy_from_host(self, source, target):
        """Copies a host file or folder to ``target`` in the guest."""
        self._call("copy_to", local=str(source), remote=str(target))

    def copy_from_host_via_shell(self, source, target):
        """As copy_from_host: Flotilla's agent copies files either way."""
        self.copy_from_host(source, target)

    def copy_from_vm(self, source, target_dir=""):
        """Copies a guest file or folder into the log folder (under ``target_dir``)."""
        local = os.path.join(str(target_dir), os.path.basename(str(source).rstrip("/")))
        return self._call("copy_from", remote=str(source), local=local)

    def copy_to(self, local, remote):
        """Copies a host file or folder (relative to the spec) into the guest."""
        return self._call("copy_to", local=str(local), remote=str(remote))

    def copy_from(self, remote, local):
        """Copies a guest file or folder to ``local`` in the log folder."""
        return self._call("copy_from", remote=str(remote), local=str(local))

    # Network.
    def block(self, vlan=None):
        """Takes the machine's links down: on every VLAN, or on ``vlan``."""
        for v in self.vlans if vlan is None else [vlan]:
            self._call("set_link", vlan=v, up=False)

    def unblock(self, vlan=None):
        for v in self.vlans if vlan is None else [vlan]:
            self._call("set_link", vlan=v, up=True)

    def forward_port(self, host_port=8080, guest_port=80):
        """Forwards 127.0.0.1:host_port to the guest's port; returns the host port."""
        return self._call("forward", host_port=host_port, guest_port=guest_port)

    def forwarded_port(self, guest_port):
        return self._call("forwarded_port", guest_port=guest_port)

    def ip(self, vlan):
        return self._call("ip", vlan=vlan)

    def ipv6(self, vlan):
        return self._call("ipv6", vlan=vlan)

    def impair(self, vlan, delay_ms=0, jitter_ms=0, loss=0.0, bandwidth=0):
        self._call(
            "impair", vlan=vlan, delay_ms=delay_ms, jitter_ms=jitter_ms, loss=loss,
            bandwidth=bandwidth,
        )

    def unimpair(self, vlan):
        self._call("unimpair", vlan=vlan)

    def capture(self, vlan):
        return self._call("capture", vlan=vlan)


def _is_local(addr):
    return addr in ("localhost", "127.0.0.1", "::1")
