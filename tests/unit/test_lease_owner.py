"""Who holds a submit lease, and when a holder is known to be dead."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from cdc_claims.pipeline.lease_owner import holder_dead, owner_id


def test_owner_is_this_host_and_process() -> None:
    assert owner_id() == f"{socket.gethostname()}:{os.getpid()}"
    assert holder_dead(owner_id()) is False


def test_a_finished_process_of_this_host_is_dead() -> None:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    assert holder_dead(f"{socket.gethostname()}:{int(child.stdout)}") is True


def test_a_running_process_of_this_host_is_alive() -> None:
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as child:
        try:
            assert holder_dead(f"{socket.gethostname()}:{child.pid}") is False
        finally:
            child.kill()


def test_holders_on_other_hosts_are_never_judged() -> None:
    assert holder_dead("another-pod:1") is False
    assert holder_dead("garbage") is False
