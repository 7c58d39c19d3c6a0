"""Fault injection: a stream of Bahmni Saves while one part of the pipeline fails, then catch-up.

Each scenario starts its own sidecar (consumer, writer, poller as processes, settle 0) in a
fresh consumer group, saves consultations of insured demo patients at ``--rate`` Saves/s from a
paced loop (one visit per Save, as in ``e2e_latency.py``) while a fault thread breaks something,
waits until every Save has its ``iclm_claim`` row (or ``--timeout`` s after the fault is over),
and then measures, for this scenario's encounters only:

* ``lost``          Saves whose encounter has no (non-voided) ``iclm_claim`` row at the end;
* ``duplicates``    encounters with more than one non-voided ``iclm_claim`` row, or more than one
  live openIMIS claim (the same claim code twice, or two codes for one encounter);
* ``inconsistent``  ``iclm_claim`` rows whose status (case-insensitive) differs from the ledger
  row with the same claim code, or that have no ledger row;
* ``stuck``         ledger rows of these units still ``submitting``, ``settled`` or ``detected``;
* ``catch-up``      seconds from the end of the fault (component answering again, restarted
  role ready) to the first sight of the run's last ``iclm_claim`` row; ``*`` = rows missing;
* ``role_died``     a sidecar role exited by itself (it is restarted after 1-10 s, like a pod).

The stream lasts at least ``--saves`` Saves and goes on until the fault is over, so Saves keep
arriving during the whole outage. Components the script stops are started again at the end, on
errors and on Ctrl-C/SIGTERM; every sidecar process it started is stopped. The stack is never
reset. Metrics ports 19584-19586 (second consumer: 19594).

Run: ``.venv/bin/python bench/faults.py [--only kill-consumer,broker-restart] [--saves 30]``
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import random
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pymysql
from benchlib import INSUREES, consultation, fast_factory, scrape
from kafka import KafkaAdminClient

from cdc_dev.bahmni import BahmniSim, EncounterRef, PatientRef, VisitRef
from cdc_dev.base import Component, Stack, StackError, http_ok
from cdc_dev.kafka import KafkaBroker, KafkaConnect
from cdc_dev.mariadb import MariaDB
from cdc_dev.openimis import OpenImis
from cdc_dev.sidecar import Sidecar

SCENARIOS = (
    "kill-consumer",
    "kill-writer",
    "kill-poller",
    "broker-restart",
    "connect-restart",
    "mariadb-restart",
    "openimis-down",
    "bad-credentials",
    "two-consumers",
)
METRICS_BASE = 19584  # consumer, writer, poller
SECOND_CONSUMER_BASE = 19594
STUCK_STATES = ("submitting", "settled", "detected")
#: components the script may stop, in start order (restored in this order)
RESTORE_ORDER = ("mariadb", "kafka", "connect", "openimis")
ROW_POLL_SECONDS = 0.1
WARM_UP_SECONDS = 150.0
#: the sidecar's start: its readiness must come within this, self-healing included
START_SECONDS = 150.0
MAX_STREAM_SECONDS = 420.0  # safety cap on one scenario's Save stream
SAVE_RETRY_SECONDS = 180.0  # a Save that keeps failing (database down) is given up after this
WRONG_PASSWORD = "wrong"  # the deliberately wrong openHIM password of bad-credentials

T = TypeVar("T")


def now() -> float:
    return time.time()


# ---------------------------------------------------------------------------- stack helpers
class Restorer:
    """Components this script stopped; :meth:`restore` starts every one of them again."""

    def __init__(self, stack: Stack) -> None:
        mariadb = MariaDB(stack)
        self.components: dict[str, Component] = {
            "mariadb": mariadb,
            "kafka": KafkaBroker(stack),
            "connect": KafkaConnect(stack, mariadb),
            "openimis": OpenImis(stack),
        }
        self.stopped: set[str] = set()
        self._lock = threading.Lock()

    def stop(self, name: str) -> None:
        with self._lock:
            self.stopped.add(name)  # before down(): an interrupted down() is restored too
        self.components[name].down()

    def start(self, name: str) -> None:
        self.components[name].up()
        with self._lock:
            self.stopped.discard(name)

    def restore(self) -> None:
        for name in RESTORE_ORDER:
            if name in self.stopped:
                print(f"restore: starting {name} again", flush=True)
                self.start(name)

    def unhealthy(self) -> list[str]:
        return [name for name, c in self.components.items() if not c.status().startswith("running")]


def connector_tasks(connect: KafkaConnect) -> list[str]:
    """States of the connector and its tasks (``["RUNNING", "RUNNING"]``), ``["?"]`` when unknown."""
    try:
        status = connect.connector_status()
    except StackError:
        return ["?"]
    return [str(status["connector"].get("state"))] + [str(t.get("state")) for t in status.get("tasks", [])]


def restart_failed_connector(connect: KafkaConnect) -> None:
    """``POST /connectors/<name>/restart?includeTasks=true&onlyFailed=true`` (Connect REST API)."""
    url = f"{connect.url}/connectors/{connect.connector}/restart?includeTasks=true&onlyFailed=true"
    request = urllib.request.Request(url, data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=30):
        pass
    connect.wait_running()


def readyz(port: int) -> str:
    """HTTP status of a role's ``/readyz`` as text, ``refused`` when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
            return str(resp.status)
    except urllib.error.HTTPError as err:
        return str(err.code)
    except OSError:
        return "refused"


def group_state(bootstrap: str, group: str) -> str:
    """``Stable, 1 member(s)``: the consumer group as the coordinator sees it (diagnostics)."""
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="cdc-claims-faults", request_timeout_ms=5000)
    except Exception as err:  # kafka-python raises many kinds while the broker is away
        return f"unknown ({type(err).__name__})"
    try:
        info = admin.describe_groups([group]).get(group) or {}
        return f"{info.get('group_state', '?')}, {len(info.get('members') or [])} member(s)"
    except Exception as err:
        return f"unknown ({type(err).__name__})"
    finally:
        admin.close()


def consumer_figures(port: int) -> str:
    """What the running consumer process did (its counters restart with the process)."""
    m = scrape(port)
    if not m:
        return "no /metrics"
    return (
        f"events {m.get('cdc_claims_change_events_consumed_total', 0):.0f},"
        f" tx {m.get('cdc_claims_transactions_completed_total', 0):.0f},"
        f" submitted {m.get('cdc_claims_claims_submitted_total', 0):.0f},"
        f" upstream errors {m.get('cdc_claims_upstream_errors_total', 0):.0f}"
    )


class SecondSidecar(Sidecar):
    """A second set of role processes in the same consumer group, with its own log files."""

    def log(self, role: str) -> Path:
        return self.stack.log(f"sidecar-{self.group}-{role}-2")


# ---------------------------------------------------------------------------- role supervision
@dataclass
class Slot:
    sidecar: Sidecar
    role: str
    port: int
    env: dict[str, str] = field(default_factory=dict)
    deaths: int = 0
    restart_at: float | None = None


class Roles:
    """The role processes of a scenario. :meth:`check` restarts a role that exited by itself
    (after 1 s, doubling up to 10 s for repeated deaths) and records it; kills and stops done
    through :meth:`kill`/:meth:`terminate` are deliberate and not recorded."""

    def __init__(self, sidecar: Sidecar) -> None:
        self.slots = {role: Slot(sidecar, role, sidecar.metrics_ports[role]) for role in sidecar.roles}
        self.died: list[tuple[str, int | None, float]] = []  # (slot, exit code, when)
        self._lock = threading.Lock()
        self.closed = False

    def add(self, name: str, sidecar: Sidecar, role: str) -> None:
        with self._lock:
            self.slots[name] = Slot(sidecar, role, sidecar.metrics_ports[role])

    def proc(self, name: str) -> subprocess.Popen[bytes] | None:
        slot = self.slots[name]
        return slot.sidecar.procs.get(slot.role)

    def start(self, name: str, env: dict[str, str] | None = None) -> None:
        with self._lock:
            slot = self.slots[name]
            slot.env = dict(env or {})
            slot.restart_at = None
            slot.sidecar.start_role(slot.role, slot.env)

    def kill(self, name: str) -> None:
        with self._lock:
            slot = self.slots[name]
            slot.restart_at = None
            slot.sidecar.kill(slot.role)

    def terminate(self, name: str, timeout: float = 30.0) -> int | None:
        """SIGTERM (a clean stop, as Kubernetes does), wait; SIGKILL after ``timeout``. Exit code."""
        with self._lock:
            slot = self.slots[name]
            slot.restart_at = None
            proc = slot.sidecar.procs.pop(slot.role, None)
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            return None

    def wait_ready(self, name: str, timeout: float, stopping: threading.Event) -> float | None:
        """When ``/readyz`` of the slot first answers 200 (None: not within ``timeout``)."""
        port = self.slots[name].port
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not stopping.is_set():
            if http_ok(f"http://127.0.0.1:{port}/readyz"):
                return now()
            stopping.wait(0.25)
        return None

    def check(self) -> list[str]:
        """Record roles that exited by themselves, restart those whose back-off is over."""
        events: list[str] = []
        with self._lock:
            if self.closed:
                return events
            t = now()
            for name, slot in self.slots.items():
                proc = slot.sidecar.procs.get(slot.role)
                if proc is not None and proc.poll() is not None:
                    slot.sidecar.procs.pop(slot.role)
                    slot.deaths += 1
                    self.died.append((name, proc.returncode, t))
                    slot.restart_at = t + min(10.0, 2.0 ** (slot.deaths - 1))
                    events.append(f"{name} died (exit {proc.returncode}), restart in {slot.restart_at - t:.0f}s")
                elif proc is None and slot.restart_at is not None and t >= slot.restart_at:
                    slot.restart_at = None
                    slot.sidecar.start_role(slot.role, slot.env)
                    events.append(f"{name} restarted after it died")
        return events

    def stop_all(self) -> None:
        with self._lock:
            self.closed = True
            sidecars = {id(s.sidecar): s.sidecar for s in self.slots.values()}
        for sidecar in sidecars.values():
            sidecar.stop()


# ---------------------------------------------------------------------------- iclm rows
class RowWatcher(threading.Thread):
    """Polls ``iclm_claim`` for the watched encounters (own connection, reconnects while the
    database is down) and records when each row was first seen."""

    def __init__(self, db: MariaDB) -> None:
        super().__init__(name="row-watcher", daemon=True)
        self._factory = fast_factory(db, autocommit=True)
        self._lock = threading.Lock()
        self._pending: set[int] = set()
        self.seen: dict[int, float] = {}
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def watch(self, encounter_id: int) -> None:
        with self._lock:
            self._pending.add(encounter_id)

    def first_seen(self) -> dict[int, float]:
        with self._lock:
            return dict(self.seen)

    def run(self) -> None:
        conn: Any = None
        try:
            while not self.stopping.is_set():
                with self._lock:
                    pending = sorted(self._pending)
                if pending:
                    try:
                        if conn is None:
                            conn = self._factory()
                        with conn.cursor() as cur:
                            marks = ",".join(["%s"] * len(pending))
                            cur.execute(
                                "SELECT DISTINCT encounter FROM iclm_claim WHERE voided = 0"
                                f" AND encounter IN ({marks})",
                                pending,
                            )
                            found = [int(row[0]) for row in cur.fetchall()]
                        t = now()
                        with self._lock:
                            for encounter in found:
                                self._pending.discard(encounter)
                                self.seen.setdefault(encounter, t)
                    except (pymysql.Error, OSError):
                        if conn is not None:
                            with _suppress():
                                conn.close()
                        conn = None
                        self.stopping.wait(0.5)
                        continue
                self.stopping.wait(ROW_POLL_SECONDS)
        except BaseException as err:  # reported by the main thread
            self.error = err
        finally:
            if conn is not None:
                with _suppress():
                    conn.close()


def _suppress() -> contextlib.suppress:
    """For closing a broken connection."""
    return contextlib.suppress(Exception)


def query(db: MariaDB, sql: str, args: Sequence[Any], attempts: int = 60) -> list[tuple[Any, ...]]:
    """One SELECT on a fresh connection, retried for a while if the database is unreachable."""
    for attempt in range(attempts):
        try:
            conn = fast_factory(db, autocommit=True)()
            try:
                with conn.cursor() as cur:
                    cur.execute(sql, list(args))
                    return [tuple(row) for row in cur.fetchall()]
            finally:
                conn.close()
        except (pymysql.err.OperationalError, OSError):
            if attempt + 1 == attempts:
                raise
            time.sleep(1.0)
    return []


# ---------------------------------------------------------------------------- measurement
@dataclass
class Measure:
    lost: int = 0
    duplicates: int = 0
    inconsistent: int = 0
    stuck: int = 0
    lost_states: Counter[str] = field(default_factory=Counter)
    states: Counter[str] = field(default_factory=Counter)


def measure(db: MariaDB, openimis: OpenImis, encounters: Sequence[EncounterRef]) -> Measure:
    m = Measure()
    if not encounters:
        return m
    ids = [e.encounter_id for e in encounters]
    marks = ",".join(["%s"] * len(ids))
    iclm: dict[int, list[tuple[str, str]]] = {}
    for encounter, code, status in query(
        db, f"SELECT encounter, claim_code, status FROM iclm_claim WHERE voided = 0 AND encounter IN ({marks})", ids
    ):
        iclm.setdefault(int(encounter), []).append((str(code), str(status)))

    units = sorted({e.uuid for e in encounters} | {e.visit.uuid for e in encounters})
    umarks = ",".join(["%s"] * len(units))
    ledger_by_unit: dict[str, tuple[str | None, str, str | None]] = {}
    ledger_by_code: dict[str, str] = {}
    for unit, code, state, reason in query(
        db, f"SELECT unit_uuid, claim_code, state, reason FROM cdc_claims_ledger WHERE unit_uuid IN ({umarks})", units
    ):
        ledger_by_unit[str(unit)] = (None if code is None else str(code), str(state), reason and str(reason))
        if code is not None:
            ledger_by_code[str(code)] = str(state)

    # openIMIS: live claims whose code ends with the unit's uuid (hex); one psql call
    hexes = {u.replace("-", "").lower(): u for u in units}
    in_list = ",".join(f"'{h}'" for h in hexes)  # hex digits only
    out = openimis.psql(
        'SELECT "ClaimCode", count(*) FROM "tblClaim" WHERE "ValidityTo" IS NULL'
        f' AND lower(right("ClaimCode", 32)) IN ({in_list}) GROUP BY "ClaimCode"'
    )
    imis_per_unit: Counter[str] = Counter()
    for line in out.splitlines():
        code, _, count = line.partition("|")
        if count.strip():
            imis_per_unit[hexes[code.strip()[-32:].lower()]] += int(count)

    for e in encounters:
        rows = iclm.get(e.encounter_id, [])
        entry = ledger_by_unit.get(e.uuid) or ledger_by_unit.get(e.visit.uuid)
        state = entry[1] if entry else "no-ledger-row"
        m.states[state] += 1
        if not rows:
            m.lost += 1
            reason = entry[2] if entry and entry[2] else ""
            m.lost_states[f"{state}{'/' + reason if reason else ''}"] += 1
        if len(rows) > 1 or imis_per_unit[e.uuid] + imis_per_unit[e.visit.uuid] > 1:
            m.duplicates += 1
        for code, status in rows:
            if ledger_by_code.get(code, "").lower() != status.lower():
                m.inconsistent += 1
        if entry and entry[1] in STUCK_STATES:
            m.stuck += 1
    return m


# ---------------------------------------------------------------------------- scenario context
@dataclass
class Ctx:
    name: str
    args: argparse.Namespace
    rng: random.Random
    stack: Stack
    roles: Roles
    restorer: Restorer
    span: float  # planned seconds of the Save stream (--saves / --rate)
    target: int
    stopping: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    started: float = 0.0  # first Save (wall clock)
    saved: int = 0
    fault_end: float | None = None
    notes: list[str] = field(default_factory=list)
    window: tuple[float, float] | None = None  # bad-credentials: the bad window
    error: BaseException | None = None

    def say(self, event: str) -> None:
        print(f"scenario {self.name}: {self.saved}/{self.target} saves, {event}", flush=True)

    def sleep(self, seconds: float) -> bool:
        """False when the scenario is being stopped."""
        return not self.stopping.wait(max(0.0, seconds))

    def sleep_until(self, offset: float) -> bool:
        """Sleep until ``offset`` s after the first Save."""
        return self.sleep(self.started + offset - now())


Fault = Callable[[Ctx], None]


def fault_kill(role: str) -> Fault:
    def run(ctx: Ctx) -> None:
        times = sorted(ctx.rng.uniform(0.15, 0.85) * ctx.span for _ in range(ctx.args.kills))
        ctx.notes.append("kills at +" + ",".join(f"{t:.1f}" for t in times) + "s")
        for t in times:
            if not ctx.sleep_until(t):
                return
            ctx.roles.kill(role)
            ctx.say(f"{role} SIGKILLed")
            if not ctx.sleep(1.0):
                return
            ctx.roles.start(role)
            ctx.say(f"{role} restarted")
        restarted = now()
        ready = ctx.roles.wait_ready(role, 90, ctx.stopping)
        ctx.fault_end = ready or now()
        ctx.notes.append(f"{role} ready {ctx.fault_end - restarted:.1f}s after the last restart")

    return run


def fault_component(component: str, hold: Callable[[argparse.Namespace], float], at: float = 0.25) -> Fault:
    def run(ctx: Ctx) -> None:
        if not ctx.sleep_until(at * ctx.span):
            return
        ctx.say(f"stopping {component}")
        t0 = now()
        ctx.restorer.stop(component)
        stopped = now()
        seconds = hold(ctx.args)
        ctx.say(f"{component} stopped (in {stopped - t0:.1f}s), down for {seconds:.0f}s")
        if not ctx.sleep(seconds):
            return
        ctx.say(f"starting {component}")
        t1 = now()
        ctx.restorer.start(component)
        ctx.fault_end = now()
        ctx.say(f"{component} up again (start took {ctx.fault_end - t1:.1f}s)")
        ctx.notes.append(f"{component} down {t1 - stopped:.0f}s, start {ctx.fault_end - t1:.1f}s")

    return run


def fault_bad_credentials(ctx: Ctx) -> None:
    if not ctx.sleep_until(0.15 * ctx.span):
        return
    ctx.roles.terminate("consumer")
    ctx.roles.start("consumer", {"CDC_CLAIMS_OPENHIM__PASSWORD": WRONG_PASSWORD})
    bad_start = now()
    ctx.say(f"consumer restarted with a wrong openHIM password for {ctx.args.bad_seconds:.0f}s")
    port = ctx.roles.slots["consumer"].port
    codes: Counter[str] = Counter()
    while now() < bad_start + ctx.args.bad_seconds:
        codes[readyz(port)] += 1
        if not ctx.sleep(0.5):
            return
    bad_end = now()
    bad_figures = consumer_figures(port)
    ctx.window = (bad_start, bad_end)
    ctx.roles.terminate("consumer")
    ctx.roles.start("consumer")
    ctx.fault_end = now()
    ctx.say("consumer restarted with the right password (the fix)")
    answered = sum(n for code, n in codes.items() if code != "refused")
    non_200 = {code: n for code, n in codes.items() if code not in ("200", "refused")}
    detail = ", ".join(f"{code}x{n}" for code, n in sorted(non_200.items())) or "always 200"
    ctx.notes.append(
        f"readyz in bad window: {sum(non_200.values())} non-200 of {answered} answers ({detail})"
        f", {codes['refused']} refused (process starting)"
    )
    ctx.notes.append(f"bad consumer: {bad_figures}")


def fault_two_consumers(ctx: Ctx) -> None:
    if not ctx.sleep_until(0.25 * ctx.span):
        return
    first = ctx.roles.slots["consumer"].sidecar
    second = SecondSidecar(
        ctx.stack,
        settle_seconds=0.0,
        poll_seconds=ctx.args.poll_seconds,
        group=first.group,  # same CDC_CLAIMS_KAFKA__GROUP_ID; never start(): it would re-pin the group
        roles=("consumer",),
        metrics_base_port=SECOND_CONSUMER_BASE,
    )
    ctx.roles.add("consumer-2", second, "consumer")
    ctx.roles.start("consumer-2")
    t0 = now()
    ctx.say("second consumer started in the same group")
    ready = ctx.roles.wait_ready("consumer-2", 90, ctx.stopping)
    ctx.say(f"second consumer ready after {(ready or now()) - t0:.1f}s" if ready else "second consumer NOT ready")
    if not ctx.sleep_until(max(0.6 * ctx.span, (ready or now()) + 5 - ctx.started)):
        return
    t1 = now()
    rc = ctx.roles.terminate("consumer")
    ctx.fault_end = now()
    ctx.say(f"first consumer stopped with SIGTERM (exit {rc}, {ctx.fault_end - t1:.1f}s)")
    ctx.notes.append(f"overlap {t1 - t0:.1f}s, first consumer exit {rc} after {ctx.fault_end - t1:.1f}s")


FAULTS: dict[str, Fault] = {
    "kill-consumer": fault_kill("consumer"),
    "kill-writer": fault_kill("writer"),
    "kill-poller": fault_kill("poller"),
    "broker-restart": fault_component("kafka", lambda a: float(a.broker_seconds)),
    "connect-restart": fault_component("connect", lambda a: float(a.hold_seconds)),
    "mariadb-restart": fault_component("mariadb", lambda a: float(a.hold_seconds)),
    "openimis-down": fault_component("openimis", lambda a: float(a.down_seconds)),
    "bad-credentials": fault_bad_credentials,
    "two-consumers": fault_two_consumers,
}


# ---------------------------------------------------------------------------- one scenario
@dataclass
class Row:
    scenario: str
    saves: int = 0
    m: Measure = field(default_factory=Measure)
    catch_up: float | None = None
    complete: bool = False
    role_died: bool = False
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    error: str | None = None


def retrying(what: Callable[[], T], ctx: Ctx, counter: Counter[str], label: str) -> T | None:
    """Run a database write; while the database is unreachable retry every 0.5 s (a user
    pressing Save again), up to ``SAVE_RETRY_SECONDS``. None when given up or stopping."""
    deadline = time.monotonic() + SAVE_RETRY_SECONDS
    while True:
        try:
            return what()
        except (pymysql.Error, OSError) as err:
            counter[label] += 1
            if counter[label] == 1 or counter[label] % 20 == 0:
                ctx.say(f"{label} failed ({type(err).__name__}), retrying")
            if time.monotonic() > deadline or not ctx.sleep(0.5):
                return None


def warm_up(ctx: Ctx, sim: BahmniSim, visits: Sequence[VisitRef], watcher: RowWatcher) -> None:
    """One untimed Save before the fault stream; its row must arrive within ``WARM_UP_SECONDS``.

    A freshly started consumer sometimes joined its group and never consumed (seen with the old
    code: the member expired, nothing was polled, ``/readyz`` said 200). The sidecar must heal
    that by itself now (the stall detector rebuilds the consumer after ``stall_seconds``), so the
    script does not restart it: a slow warm-up is noted with its time, a missing one is a
    finding of its own."""
    visit = visits[0]
    c = consultation(10_000)
    ref = sim.save_consultation(visit, diagnoses=c.diagnoses, drugs=c.drugs, labs=c.labs)
    watcher.watch(ref.encounter_id)
    deadline = time.monotonic() + WARM_UP_SECONDS
    while time.monotonic() < deadline and not ctx.stopping.is_set():
        if ref.encounter_id in watcher.first_seen():
            took = now() - ref.committed_at
            if took > 20:
                ctx.notes.append(f"fresh consumer idle at start, healed itself in {took:.0f}s")
            ctx.say(f"warm-up row in {took:.1f}s")
            return
        time.sleep(0.2)
    port = ctx.roles.slots["consumer"].port
    ctx.say(f"warm-up: no row after {WARM_UP_SECONDS:.0f}s (consumer {consumer_figures(port)})")
    ctx.notes.append(f"consumer idle at start, not healed after {WARM_UP_SECONDS:.0f}s")


def run_scenario(name: str, args: argparse.Namespace, stack: Stack, restorer: Restorer) -> Row:
    row = Row(name)
    started = time.monotonic()
    db, openimis = MariaDB(stack), OpenImis(stack)
    sim = BahmniSim(fast_factory(db))
    n = args.saves
    rng = random.Random(f"{args.seed}:{name}")

    bad = restorer.unhealthy()
    if bad:
        raise StackError(f"stack not healthy before {name}: {', '.join(bad)} (run `cdc-dev up`)")
    t = time.monotonic()
    patients: list[PatientRef] = [
        sim.create_patient(INSUREES[i % len(INSUREES)], gender="F" if i % 2 else "M") for i in range(min(8, n))
    ]
    visits: list[VisitRef] = [sim.start_visit(patients[i % len(patients)]) for i in range(n)]
    warm_visits = [sim.start_visit(patients[0]) for _ in range(2)]
    print(f"scenario {name}: setup {len(patients)} patients, {len(visits)} visits in {time.monotonic() - t:.1f}s")

    sc = Sidecar(
        stack,
        settle_seconds=0.0,
        poll_seconds=args.poll_seconds,
        group=f"cdc-claims-faults-{name}-{uuid.uuid4().hex[:6]}",
        metrics_base_port=METRICS_BASE,
    )
    roles = Roles(sc)
    ctx = Ctx(name, args, rng, stack, roles, restorer, span=n / args.rate, target=n)
    watcher = RowWatcher(db)
    fault_thread: threading.Thread | None = None
    encounters: list[EncounterRef] = []
    failures: Counter[str] = Counter()
    try:
        t = time.monotonic()
        sc.start(timeout=START_SECONDS)  # long enough for a consumer stuck at start to heal itself
        took = time.monotonic() - t
        if took > 20:
            ctx.notes.append(f"sidecar ready only after {took:.0f}s")
        print(f"scenario {name}: sidecar {sc.group} ready in {took:.1f}s", flush=True)
        watcher.start()
        warm_up(ctx, sim, warm_visits, watcher)

        def fault_main() -> None:
            try:
                FAULTS[name](ctx)
            except BaseException as err:
                ctx.error = err
            finally:
                ctx.done.set()

        ctx.started = now()
        fault_thread = threading.Thread(target=fault_main, name=f"fault-{name}", daemon=True)
        fault_thread.start()
        step = max(1, n // 5)
        start = time.monotonic()
        i = 0
        while i < n or not ctx.done.is_set():
            if time.monotonic() - start > MAX_STREAM_SECONDS:
                ctx.say(f"stream capped at {MAX_STREAM_SECONDS:.0f}s while the fault is still running")
                break
            delay = start + i / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            for event in roles.check():
                ctx.say(event)
            if i < len(visits):
                visit: VisitRef | None = visits[i]
            else:
                patient = patients[i % len(patients)]
                visit = retrying(functools.partial(sim.start_visit, patient), ctx, failures, "visit")
            c = consultation(i)
            ref = None
            if visit is not None:
                ref = retrying(
                    functools.partial(sim.save_consultation, visit, diagnoses=c.diagnoses, drugs=c.drugs, labs=c.labs),
                    ctx,
                    failures,
                    "save",
                )
            i += 1
            if ref is None:
                failures["given up"] += 1
            else:
                encounters.append(ref)
                watcher.watch(ref.encounter_id)
                ctx.saved = len(encounters)
            if i % step == 0 or i == n:
                ctx.say(f"rows {sum(1 for e in encounters if e.encounter_id in watcher.first_seen())}")
        stream_end = now()
        ctx.say(f"stream done in {stream_end - ctx.started:.1f}s; waiting for the fault to end")
        while not ctx.done.wait(0.5):
            for event in roles.check():
                ctx.say(event)
        if ctx.error is not None:
            raise RuntimeError(f"fault {name} failed: {ctx.error}") from ctx.error
        fault_end = ctx.fault_end or stream_end

        def count_seen() -> int:
            seen_now = watcher.first_seen()
            return sum(1 for e in encounters if e.encounter_id in seen_now)

        def live_consumers() -> str:
            names = [k for k in ("consumer", "consumer-2") if k in roles.slots and roles.proc(k) is not None]
            return "; ".join(f"{k}: {consumer_figures(roles.slots[k].port)}" for k in names) or "none running"

        deadline = max(fault_end, stream_end) + args.timeout
        last_print = 0.0
        while now() < deadline:
            for event in roles.check():
                ctx.say(event)
            seen = count_seen()
            if seen >= len(encounters) or watcher.error is not None:
                break
            if time.monotonic() - last_print > 10:
                group = group_state(sc.kafka.bootstrap_servers, sc.group)
                ctx.say(f"catching up: {seen}/{len(encounters)} rows; group {group}; consumer {live_consumers()}")
                last_print = time.monotonic()
            time.sleep(0.25)
        if watcher.error is not None:
            raise RuntimeError("row watcher failed") from watcher.error
        time.sleep(1.0)  # the ledger/openIMIS writes that follow the last row
        ours = {e.encounter_id for e in encounters}
        first_seen = {k: v for k, v in watcher.first_seen().items() if k in ours}  # not the warm-up
        ctx.notes.append(f"at the end {live_consumers()}")
        ctx.say(f"measuring ({len(first_seen)}/{len(encounters)} rows)")
        row.m = measure(db, openimis, encounters)
        row.saves = len(encounters)
        row.complete = len(first_seen) >= len(encounters)
        if first_seen:
            row.catch_up = max(0.0, max(first_seen.values()) - fault_end)
        if ctx.window is not None:
            lo, hi = ctx.window
            stranded = [e for e in encounters if lo <= e.committed_at <= hi]
            arrived = [first_seen[e.encounter_id] for e in stranded if e.encounter_id in first_seen]
            after = f", last {max(arrived) - fault_end:.1f}s after the fix" if arrived else ""
            ctx.notes.append(f"stranded by the bad window: {len(stranded)}, arrived {len(arrived)}{after}")
    finally:
        ctx.stopping.set()
        watcher.stopping.set()
        if fault_thread is not None:
            fault_thread.join(timeout=300)
        roles.stop_all()
        if watcher.is_alive():
            watcher.join(timeout=5)

    died = Counter(slot for slot, _rc, _t in roles.died)
    codes = sorted({str(rc) for _slot, rc, _t in roles.died})
    row.role_died = bool(died)
    if died:
        ctx.notes.append("died: " + ", ".join(f"{s} x{k}" for s, k in died.items()) + f" (exit {'/'.join(codes)})")
    if failures:
        ctx.notes.append("db write retries: " + ", ".join(f"{k} {v}" for k, v in failures.items()))
    if row.m.lost_states:
        ctx.notes.append("lost in ledger state: " + ", ".join(f"{k} {v}" for k, v in row.m.lost_states.items()))
    connect = KafkaConnect(stack, db)
    tasks = connector_tasks(connect)
    if any(s != "RUNNING" for s in tasks):
        ctx.notes.append(f"connector {'/'.join(tasks)} after the scenario; restarted")
        print(f"scenario {name}: connector states {tasks}; restarting failed tasks", flush=True)
        restart_failed_connector(connect)
    row.notes = ctx.notes
    row.seconds = time.monotonic() - started
    print(f"scenario {name}: ledger states {dict(row.m.states)}; logs {sc.log('consumer')}", flush=True)
    return row


# ---------------------------------------------------------------------------- report
HEADER = ("scenario", "saves", "lost", "dup", "incons", "stuck", "catch-up s", "role_died", "run s", "notes")


def cells(row: Row) -> tuple[str, ...]:
    if row.error is not None:
        return (row.scenario, "-", "-", "-", "-", "-", "-", "-", f"{row.seconds:.0f}", f"ERROR: {row.error}")
    catch = "-" if row.catch_up is None else f"{row.catch_up:.1f}{'' if row.complete else '*'}"
    m = row.m
    return (
        row.scenario,
        str(row.saves),
        str(m.lost),
        str(m.duplicates),
        str(m.inconsistent),
        str(m.stuck),
        catch,
        "yes" if row.role_died else "no",
        f"{row.seconds:.0f}",
        "; ".join(row.notes),
    )


def print_table(rows: Sequence[Row]) -> None:
    table = [HEADER, *(cells(r) for r in rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADER) - 1)]
    for line in table:
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line[:-1], widths, strict=True))
            )
            + "  "
            + line[-1]
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--only", default="", help=f"comma-separated scenarios (default all): {','.join(SCENARIOS)}")
    ap.add_argument("--saves", type=int, default=30, help="Saves per scenario, at least (default 30)")
    ap.add_argument("--rate", type=float, default=2.0, help="Saves per second (default 2)")
    ap.add_argument("--seed", type=int, default=1, help="RNG seed of the kill moments (default 1)")
    ap.add_argument("--timeout", type=float, default=180.0, help="catch-up deadline after the fault (default 180 s)")
    ap.add_argument("--down-seconds", type=float, default=60.0, help="openimis-down: seconds down (default 60)")
    ap.add_argument("--broker-seconds", type=float, default=20.0, help="broker-restart: seconds down (default 20)")
    ap.add_argument("--hold-seconds", type=float, default=5.0, help="connect/mariadb-restart: seconds down (5)")
    ap.add_argument("--bad-seconds", type=float, default=30.0, help="bad-credentials: bad window (default 30 s)")
    ap.add_argument("--kills", type=int, default=3, help="kill-*: SIGKILLs during the stream (default 3)")
    ap.add_argument("--poll-seconds", type=float, default=10.0, help="poller role interval (default 10)")
    args = ap.parse_args(argv)
    names = [s.strip() for s in args.only.split(",") if s.strip()] or list(SCENARIOS)
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        ap.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    if args.saves < 1 or args.rate <= 0 or args.kills < 1:
        ap.error("--saves >= 1, --rate > 0 and --kills >= 1")

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    stack = Stack.from_env()
    restorer = Restorer(stack)
    print(f"faults: stack {stack.state_dir}, kafka 127.0.0.1:{stack.ports.kafka}, mariadb {stack.ports.mariadb}")
    print(f"faults: scenarios {', '.join(names)}; {args.saves} saves at {args.rate}/s, seed {args.seed}", flush=True)
    rows: list[Row] = []
    failed = False
    try:
        for name in names:
            t = time.monotonic()
            print(f"=== scenario {name}", flush=True)
            try:
                row = run_scenario(name, args, stack, restorer)
            except (StackError, RuntimeError, pymysql.Error, OSError, subprocess.SubprocessError) as err:
                traceback.print_exc()
                row = Row(name, error=str(err).splitlines()[0][:200], seconds=time.monotonic() - t)
                failed = True
            finally:
                restorer.restore()  # a scenario interrupted mid-fault leaves nothing stopped
            rows.append(row)
            print_table([row])
    finally:
        previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            restorer.restore()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
    print()
    print(f"=== faults: {len(rows)} scenario(s), {args.saves} saves at {args.rate}/s, seed {args.seed}")
    print_table(rows)
    print("catch-up: fault over (component answering / restarted role ready) -> last iclm_claim row; * = rows missing")
    ok = [r for r in rows if r.error is None]
    print(
        f"faults: lost={sum(r.m.lost for r in ok)} duplicates={sum(r.m.duplicates for r in ok)}"
        f" inconsistent={sum(r.m.inconsistent for r in ok)} stuck={sum(r.m.stuck for r in ok)}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; sidecars stopped, stopped components started again", file=sys.stderr)
        sys.exit(130)
