"""Shared helpers of the benchmarks in ``bench/`` (not a benchmark itself).

* :func:`fast_factory`: connections for the Bahmni simulator without PyMySQL's per-connection
  TLS context (see ``README.md``: PyMySQL >= 1.2 builds an ``ssl.create_default_context()`` on
  every connect, ~20 ms of CPU, even when the server has no TLS);
* consultation contents drawn from the demo mapping, so every claim is mappable;
* ``/proc`` readers (RSS, peak RSS, CPU seconds) and a tiny Prometheus text parser;
* percentiles (nearest rank) and a figure formatter.
"""

from __future__ import annotations

import math
import os
import signal
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

import pymysql

from cdc_dev.bahmni import Drug, Dx
from cdc_dev.mariadb import DATABASE, MariaDB

#: demo insurees with valid policies (CHF ids)
INSUREES = ("070707081", "070707070", "100000001", "111111119")

# All mapped in examples/mapping.yaml.
DIAGNOSES = (
    "de617543-4e14-11e4-8a57-0800271c1b75",  # Hyperthyroidism -> A09
    "de0be4e3-4e14-11e4-8a57-0800271c1b75",  # Diabetes II -> A499
    "e4a391e6-4e14-11e4-8a57-0800271c1b75",  # Hypertension -> A689
)
DRUGS = (
    "6f0242cf-1cf2-4c0d-a522-e8628f0cd988",  # Nifedipine
    "5d3aa389-a44e-410d-9525-30af971b096c",  # Methimazole
    "d9c230a5-89d8-4e4d-b08b-2af3b1234c80",  # Paracetamol
    "ac2ae8b0-27ef-4989-bfd4-cf0b60686758",  # Losartan
    "952916ed-55f9-498a-8880-3b69855598ef",  # Metformin
    "f1bf36d3-1d21-4488-8d88-4f03fcd860f9",  # Pioglitazone
    "020c1d70-b578-4da1-a640-cced0ad7d7a2",  # Glipizide
)
LABS = (
    "f2af3cd5-634f-4b17-97c5-d5cd52ee2867",  # Thyroid Function
    "38e31e15-e017-45a2-a5ae-a6f70ba1799a",  # Fasting Blood Sugar
    "df9401b8-552e-4d70-8c15-c3a35a982496",  # HbA1c
    "4eba9912-2fa6-4ab2-a37b-16d654e8cf06",  # Kidney Function
    "60b556bb-1c91-4aa3-8c08-4f151aab83e1",  # LDL
)


@dataclass(frozen=True)
class Consultation:
    diagnoses: tuple[Dx, ...]
    drugs: tuple[Drug, ...]
    labs: tuple[str, ...]


def consultation(i: int) -> Consultation:
    """The i-th consultation: 1 diagnosis, 2 drugs, 1 lab (+ the consultation service = 4 lines)."""
    return Consultation(
        diagnoses=(Dx(DIAGNOSES[i % len(DIAGNOSES)]),),
        drugs=(Drug(DRUGS[i % len(DRUGS)], 5 + i % 11), Drug(DRUGS[(i + 3) % len(DRUGS)], 10)),
        labs=(LABS[i % len(LABS)],),
    )


def fast_factory(db: MariaDB, user: str = "cdc_admin", *, autocommit: bool = False) -> Callable[[], Any]:
    """Like ``MariaDB.connect`` but with ``ssl_disabled=True`` (the stack's MariaDB has no TLS)."""
    password = db.passwords()[user]

    def factory() -> Any:
        return pymysql.connect(
            host="127.0.0.1",
            port=db.port,
            user=user,
            password=password,
            database=DATABASE,
            charset="utf8mb4",
            connect_timeout=5,
            autocommit=autocommit,
            ssl_disabled=True,
        )

    return factory


# ---------------------------------------------------------------------------- /proc
def proc_status(pid: int) -> dict[str, int]:
    """``VmRSS``/``VmHWM`` (peak RSS) of a process in bytes; empty when it is gone."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return out


def proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (``/proc/<pid>/stat``)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14, 15 of stat)


def other_sidecars(ours: set[int]) -> set[int]:
    """Pids of ``cdc_claims run consumer`` processes that are not ours (the stack is shared:
    another sidecar claims our encounters too, and competes for the 2 cores)."""
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in ours:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if b"cdc_claims" in argv and b"run" in argv and b"consumer" in argv:
            found.add(int(entry))
    return found


def mib(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:.1f} MiB"


# ---------------------------------------------------------------------------- metrics
def scrape(port: int, timeout: float = 2.0) -> dict[str, float]:
    """``/metrics`` of a role, summed per metric name over labels (empty if unreachable)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as resp:  # loopback only
            text = resp.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        try:
            out[name] = out.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return out


# ---------------------------------------------------------------------------- statistics
def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary_ms(values: Sequence[float]) -> str:
    """``p50/p95/p99/max`` of seconds, printed in milliseconds."""
    if not values:
        return "no samples"
    parts = [f"p{p}={percentile(values, p) * 1000:7.1f}" for p in (50, 95, 99)]
    return "  ".join([*parts, f"max={max(values) * 1000:7.1f}", f"(n={len(values)})"])


def sigterm_as_interrupt() -> None:
    """SIGTERM behaves like Ctrl-C, so the ``finally`` blocks stop the sidecar."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
