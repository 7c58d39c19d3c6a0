"""Consumer memory with a backlog: "peak RSS <= 150 MiB with 100,000 encounters queued".

1. creates patients and one open visit per encounter (not timed), waits for Debezium to publish them;
2. pins a fresh consumer group to the end of the data topics WITHOUT starting the consumer;
3. saves ``--encounters`` consultations as fast as it can, one transaction per Save (Bahmni-shaped),
   and waits until Debezium has published them: the backlog is now queued in Kafka;
4. starts the consumer role only (settle window ``--settle``: with a long window, e.g. 3600, every
   encounter stays a pending unit in memory; with 0 it is claimed as it is read) and samples its
   RSS and ``/metrics`` every second until it has read the whole backlog, or flow control has
   paused its intake (``cdc_claims_intake_paused``) and nothing moved for ``--hold`` seconds (the
   rest of the backlog waits in Kafka: that is the point), or ``--max-consume-seconds`` passed.

Patients get no insurance number unless ``--insured``: the rows of a Save are the same, but should
another sidecar on the shared stack see these encounters, it holds them ("no insurance") instead of
POSTing thousands of claims to the shared openIMIS.

Run: ``.venv/bin/python bench/backlog_rss.py --encounters 10000 --settle 3600``
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from benchlib import (
    INSUREES,
    consultation,
    fast_factory,
    mib,
    other_sidecars,
    proc_cpu_seconds,
    proc_status,
    scrape,
    sigterm_as_interrupt,
)
from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from cdc_claims.pipeline.consumer_role import CAPTURED_TABLES
from cdc_dev.bahmni import BahmniSim, VisitRef
from cdc_dev.base import http_ok
from cdc_dev.mariadb import MariaDB
from cdc_dev.sidecar import Sidecar

TARGET_RSS = 150 * 2**20  # "150 MiB", whatever the backlog


class Offsets:
    """End (and committed) offsets of the data topics (one KafkaConsumer, never joining a group)."""

    def __init__(self, sc: Sidecar) -> None:
        self._consumer = KafkaConsumer(
            bootstrap_servers=sc.kafka.bootstrap_servers, group_id=sc.group, enable_auto_commit=False
        )
        self.topics = [sc.kafka.table_topic(t) for t in CAPTURED_TABLES] + [sc.kafka.transaction_topic]
        self.encounter_topic = sc.kafka.table_topic("encounter")
        self.tx_topic = sc.kafka.transaction_topic

    @property
    def parts(self) -> list[Any]:
        """Partitions of the topics that exist now (Debezium creates a table's topic at its first row)."""
        existing = self._consumer.topics()
        return [
            TopicPartition(t, p)
            for t in self.topics
            if t in existing
            for p in self._consumer.partitions_for_topic(t) or ()
        ]

    def ends(self) -> dict[Any, int]:
        return {tp: int(o) for tp, o in self._consumer.end_offsets(self.parts).items()}

    def committed(self) -> dict[Any, int]:
        """The group's committed offsets (the pinned start of the backlog)."""
        return {tp: int(self._consumer.committed(tp) or 0) for tp in self.parts}

    def _table_ends(self) -> int:
        # The transaction topic is left out on purpose: any other sidecar on the shared stack
        # writes its ledger rows all the time, so its END events never go quiet.
        return sum(o for tp, o in self.ends().items() if tp.topic != self.tx_topic)

    def encounters_since(self, pinned: dict[Any, int]) -> int:
        return sum(o - pinned.get(tp, 0) for tp, o in self.ends().items() if tp.topic == self.encounter_topic)

    def wait_quiet(
        self, quiet: float, limit: float, *, encounters: int = 0, pinned: dict[Any, int] | None = None
    ) -> float:
        """Wait until ``encounters`` encounter rows arrived after ``pinned`` and the table topics
        stopped growing for ``quiet`` s (bounded by ``limit``); returns seconds waited."""
        start = time.monotonic()
        last, since = self._table_ends(), time.monotonic()
        while time.monotonic() - start < limit:
            time.sleep(0.5)
            now = self._table_ends()
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet and self.encounters_since(pinned or {}) >= encounters:
                break
        return time.monotonic() - start

    def close(self) -> None:
        self._consumer.close(autocommit=False)


def setup(sim: BahmniSim, n: int, patients: int, insured: bool) -> list[VisitRef]:
    people = [sim.create_patient(INSUREES[i % len(INSUREES)] if insured else None) for i in range(patients)]
    visits = []
    for i in range(n):
        visits.append(sim.start_visit(people[i % len(people)]))
        if (i + 1) % max(1, n // 5) == 0:
            print(f"  setup: {i + 1}/{n} visits", flush=True)
    return visits


def generate(sim: BahmniSim, visits: list[VisitRef], limit: float) -> tuple[int, float]:
    """One Save (transaction) per visit, as fast as possible; returns (count, seconds)."""
    n, step = len(visits), max(1, len(visits) // 10)
    start = time.monotonic()
    done = 0
    for i, visit in enumerate(visits):
        if time.monotonic() - start > limit:
            print(f"  generation time limit ({limit:.0f}s) reached", flush=True)
            break
        c = consultation(i)
        sim.save_consultation(visit, diagnoses=c.diagnoses, drugs=c.drugs, labs=c.labs)
        done = i + 1
        if done % step == 0:
            elapsed = time.monotonic() - start
            print(f"  saved {done}/{n}  ({done / elapsed:.0f} Saves/s, {elapsed:.0f}s)", flush=True)
    return done, time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--encounters", type=int, default=10_000, help="queued encounters (default 10000)")
    ap.add_argument("--settle", type=float, default=3600.0, help="consumer settle window, s (default 3600)")
    ap.add_argument("--patients", type=int, default=200, help="patients (visits: one per encounter)")
    ap.add_argument("--insured", action="store_true", help="give patients demo CHF ids (claims are POSTed)")
    ap.add_argument("--hold", type=float, default=10.0, help="keep sampling this long after the backlog is read")
    ap.add_argument("--max-generate-seconds", type=float, default=900.0)
    ap.add_argument("--max-consume-seconds", type=float, default=600.0)
    ap.add_argument("--metrics-port", type=int, default=19574, help="base metrics port (consumer = base)")
    ap.add_argument(
        "--resume-group",
        help="skip setup and generation: read the backlog already queued for this (pinned, never started) group",
    )
    args = ap.parse_args(argv)
    sigterm_as_interrupt()

    db = MariaDB()
    sim = BahmniSim(fast_factory(db))
    sc = Sidecar(
        settle_seconds=args.settle, metrics_base_port=args.metrics_port, roles=("consumer",), group=args.resume_group
    )
    offsets = Offsets(sc)
    count, gen_seconds, lag = 0, 0.0, 0.0
    try:
        if args.resume_group:
            pinned = offsets.committed()
            count = offsets.encounters_since(pinned)
            print(f"resuming group {sc.group}: {count} encounter rows queued since its pin", flush=True)
        else:
            t = time.monotonic()
            visits = setup(sim, args.encounters, min(args.patients, args.encounters), args.insured)
            print(f"setup: {len(visits)} visits in {time.monotonic() - t:.0f}s", flush=True)
            waited = offsets.wait_quiet(3.0, 300.0)
            print(f"debezium quiet after setup ({waited:.0f}s)", flush=True)

            sc.prepare()  # pin the group to the end: the backlog starts here
            pinned = offsets.ends()
            print(f"group {sc.group} pinned; generating {args.encounters} Saves (one transaction each) ...", flush=True)
            count, gen_seconds = generate(sim, visits, args.max_generate_seconds)
            lag = offsets.wait_quiet(3.0, 600.0, encounters=count, pinned=pinned) - 3.0
        ends = offsets.ends()
        backlog = sum(ends[tp] - pinned.get(tp, 0) for tp in ends)
        per_topic = {tp.topic.rsplit(".", 1)[-1]: ends[tp] - pinned.get(tp, 0) for tp in ends}
        print(f"debezium caught up {max(lag, 0.0):.0f}s after the last Save; backlog {backlog} records", flush=True)
        print(f"  per topic: {per_topic}", flush=True)

        port = sc.metrics_ports["consumer"]
        t = time.monotonic()
        sc.start_role("consumer")  # not sc.start(): that would pin the group to the end again
        proc = sc.procs["consumer"]
        while not http_ok(f"http://127.0.0.1:{port}/readyz"):
            if proc.poll() is not None or time.monotonic() - t > 60:
                raise RuntimeError(f"consumer did not become ready; see {sc.log('consumer')}")
            time.sleep(0.2)
        ready = time.monotonic() - t
        print(f"consumer ready in {ready:.1f}s (settle {args.settle}s); sampling every 1s", flush=True)

        start = time.monotonic()
        peak_rss, read_at, samples = 0, None, 0
        held_since: float | None = None  # intake paused and nothing consumed since
        paused_seen, last_consumed = False, -1.0
        others: set[int] = set()
        last: dict[str, float] = {}
        while time.monotonic() - start < args.max_consume_seconds:
            time.sleep(1.0)
            if proc.poll() is not None:
                raise RuntimeError(f"consumer exited ({proc.returncode}); see {sc.log('consumer')}")
            st, last = proc_status(proc.pid), scrape(port) or last
            peak_rss = max(peak_rss, st.get("VmRSS", 0))
            samples += 1
            consumed = last.get("cdc_claims_change_events_consumed_total", 0.0)
            pending = last.get("cdc_claims_pending_units", 0.0)
            paused = last.get("cdc_claims_intake_paused", 0.0) > 0
            paused_seen |= paused
            elapsed = time.monotonic() - start
            if paused and consumed == last_consumed:
                held_since = elapsed if held_since is None else held_since
            else:
                held_since = None
            last_consumed = consumed
            if samples % 5 == 0 or (read_at is None and consumed >= backlog):
                others |= other_sidecars({proc.pid})
                print(
                    f"  +{elapsed:5.0f}s rss {mib(st.get('VmRSS'))}  consumed {consumed:.0f}/{backlog}"
                    f"  tx {last.get('cdc_claims_transactions_completed_total', 0):.0f}  pending units {pending:.0f}"
                    f"  submitted {last.get('cdc_claims_claims_submitted_total', 0):.0f}"
                    f"  held {last.get('cdc_claims_claims_held_total', 0):.0f}"
                    f"{'  intake PAUSED' if paused else ''}",
                    flush=True,
                )
            if read_at is None and consumed >= backlog:
                read_at = elapsed
            settled = args.settle > 0 or pending == 0
            if read_at is not None and settled and elapsed - read_at >= args.hold:
                break
            if held_since is not None and elapsed - held_since >= args.hold:
                break  # flow control holds the rest of the backlog in Kafka
        st = proc_status(proc.pid)
        cpu = proc_cpu_seconds(proc.pid)
    finally:
        sc.stop()
        offsets.close()

    log_text = sc.log("consumer").read_text(errors="replace")
    print()
    print(f"=== backlog RSS: {count} encounters queued, settle {args.settle}s, group {sc.group}")
    if not args.resume_group:
        print(f"generation: {count} Saves in {gen_seconds:.0f}s = {count / max(gen_seconds, 1e-9):.0f} Saves/s")
    print(f"backlog in Kafka: {backlog} records ({backlog / max(count, 1):.1f} per Save)")
    consumed = last.get("cdc_claims_change_events_consumed_total", 0.0)
    if read_at is None and held_since is not None:
        print(
            f"intake paused by flow control after {consumed:.0f} of {backlog} records"
            f" ({consumed / max(backlog, 1):.0%}); the rest waits in Kafka until pending units fall"
        )
    elif read_at is None:
        print(f"backlog NOT fully read within {args.max_consume_seconds:.0f}s")
    else:
        print(f"read in {read_at:.0f}s (~{backlog / max(read_at, 1e-9):.0f} records/s, 1 s sampling)")
    print(
        f"consumer RSS: peak {mib(st.get('VmHWM'))} (VmHWM), max sampled {mib(peak_rss)}, at end"
        f" {mib(st.get('VmRSS'))}  [target <= 150 MiB: {'MET' if st.get('VmHWM', 0) <= TARGET_RSS else 'MISSED'}]"
    )
    print(
        f"pending units at end {last.get('cdc_claims_pending_units', 0):.0f}, transactions"
        f" {last.get('cdc_claims_transactions_completed_total', 0):.0f}, claims submitted"
        f" {last.get('cdc_claims_claims_submitted_total', 0):.0f},"
        f" held {last.get('cdc_claims_claims_held_total', 0):.0f}"
    )
    print(f"intake paused at some point: {'yes' if paused_seen else 'no'}")
    print(f"consumer CPU: {cpu if cpu is not None else float('nan'):.1f}s")
    warnings, errors = log_text.count('"level": "warning"'), log_text.count('"level": "error"')
    expired = log_text.count("transaction_expired_incomplete")
    print(f"log: transaction_expired_incomplete x{expired}, warnings x{warnings}, errors x{errors}")
    if others:
        print(f"WARNING: other sidecar consumers ran meanwhile (pids {sorted(others)}): CPU shared")
    print(f"log: {sc.log('consumer')}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; consumer stopped", file=sys.stderr)
        sys.exit(130)
