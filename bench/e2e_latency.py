"""End-to-end latency: Bahmni Save (COMMIT) -> ``iclm_claim`` row, through the real pipeline.

Starts its own sidecar (consumer, writer, poller as processes; settle window ``--settle``,
default 0), creates patients and one visit per encounter up front (not timed), then saves
``--encounters`` consultations at ``--rate`` saves/s from a paced loop, one transaction each.

Measured per encounter:

* ``commit``  -- wall clock right after COMMIT (``EncounterRef.committed_at``);
* ``row``     -- first sight of its ``iclm_claim`` row by a poller thread (every ~20 ms, own
  connection); ``row_log`` -- the writer's ``reply_written`` log timestamp (no poll granularity);
* from the reply topic (``timings``): ``captured_ms`` (the consumer saw the transaction
  complete), ``submit_seconds`` (the POST through openHIM, i.e. openIMIS's share), ``published_ms``.

Shares: capture = captured - commit; openIMIS = submit_seconds; sidecar = total - capture - POST.

Run: ``.venv/bin/python bench/e2e_latency.py --encounters 200 --rate 5``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from benchlib import (
    INSUREES,
    consultation,
    fast_factory,
    mib,
    other_sidecars,
    percentile,
    proc_cpu_seconds,
    proc_status,
    scrape,
    sigterm_as_interrupt,
    summary_ms,
)
from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from cdc_claims.reply.model import WithdrawalNotice, decode_message
from cdc_dev.bahmni import BahmniSim, EncounterRef, PatientRef, VisitRef
from cdc_dev.mariadb import MariaDB
from cdc_dev.sidecar import Sidecar, ensure_topics

TARGET_E2E_P99 = 2.0  # seconds, commit -> billing row
TARGET_SIDECAR_P99 = 0.050  # seconds, total minus capture minus the openIMIS POST
ROW_POLL_SECONDS = 0.02


@dataclass
class Sample:
    encounter_id: int
    uuid: str
    committed: float
    row_seen: float | None = None
    row_status: str | None = None
    row_log: float | None = None  # writer's reply_written timestamp
    captured: float | None = None
    submit: float | None = None
    published: float | None = None
    reply_status: str | None = None


class RowPoller(threading.Thread):
    """Polls ``iclm_claim`` for the registered encounters; records the first sight of each."""

    def __init__(self, db: MariaDB) -> None:
        super().__init__(name="row-poller", daemon=True)
        self._conn = fast_factory(db, autocommit=True)()
        self._lock = threading.Lock()
        self._pending: set[int] = set()
        self.seen: dict[int, tuple[float, str]] = {}
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def watch(self, encounter_id: int) -> None:
        with self._lock:
            self._pending.add(encounter_id)

    def seen_count(self) -> int:
        with self._lock:
            return len(self.seen)

    def run(self) -> None:
        try:
            with self._conn.cursor() as cur:
                while not self.stopping.is_set():
                    started = time.monotonic()
                    with self._lock:
                        pending = sorted(self._pending)
                    if pending:
                        marks = ",".join(["%s"] * len(pending))
                        cur.execute(
                            f"SELECT encounter, date_created, status FROM iclm_claim WHERE encounter IN ({marks})",
                            pending,
                        )
                        now = time.time()
                        rows = cur.fetchall()
                        with self._lock:
                            for encounter, _created, status in rows:
                                if encounter in self._pending:
                                    self._pending.discard(encounter)
                                    self.seen[int(encounter)] = (now, str(status))
                    self.stopping.wait(max(0.0, ROW_POLL_SECONDS - (time.monotonic() - started)))
        except BaseException as err:  # reported by the main thread
            self.error = err
        finally:
            self._conn.close()


class ReplyReader(threading.Thread):
    """Reads the reply topic from its current end; keeps the first reply with timings per encounter."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(name="reply-reader", daemon=True)
        ensure_topics(bootstrap, [topic])  # a fresh stack has no reply topic before the first reply
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
        parts = [TopicPartition(topic, p) for p in sorted(self._consumer.partitions_for_topic(topic) or {0})]
        self._consumer.assign(parts)
        self._consumer.seek_to_end(*parts)
        for tp in parts:
            self._consumer.position(tp)  # resolve "end" now, before any Save
        self._lock = threading.Lock()
        self.replies: dict[str, Any] = {}  # encounter uuid -> ReplyMessage
        self.count = 0
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                for records in self._consumer.poll(timeout_ms=200).values():
                    for record in records:
                        message = decode_message(record.value)
                        if isinstance(message, WithdrawalNotice) or message.timings is None:
                            continue  # a withdrawal flag, or a later status change from the poller role
                        with self._lock:
                            self.count += 1
                            for enc_uuid in message.claim.encounter_uuids:
                                self.replies.setdefault(enc_uuid, message)
        except BaseException as err:
            self.error = err
        finally:
            self._consumer.close(autocommit=False)

    def get(self, enc_uuid: str) -> Any:
        with self._lock:
            return self.replies.get(enc_uuid)


def writer_log_times(path: Path, since: float) -> dict[str, float]:
    """encounter uuid -> timestamp of the writer's ``reply_written`` log line (after ``since``)."""
    out: dict[str, float] = {}
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return out
    for line in lines:
        if '"reply_written"' not in line:
            continue
        try:
            entry = json.loads(line)
            ts = datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()
        except (ValueError, KeyError, TypeError):
            continue
        if ts < since:
            continue
        for enc_uuid in entry.get("encounter_uuids", []):
            out.setdefault(enc_uuid, ts)
    return out


def setup(sim: BahmniSim, n: int, patients: int) -> list[VisitRef]:
    """Patients (round-robin over the demo insurees) and one open visit per encounter."""
    people: list[PatientRef] = [
        sim.create_patient(INSUREES[i % len(INSUREES)], gender="F" if i % 2 else "M") for i in range(patients)
    ]
    return [sim.start_visit(people[i % len(people)]) for i in range(n)]


def save(sim: BahmniSim, visit: VisitRef, i: int) -> EncounterRef:
    c = consultation(i)
    return sim.save_consultation(visit, diagnoses=c.diagnoses, drugs=c.drugs, labs=c.labs)


def wait_for(samples: list[Sample], rows: RowPoller, deadline: float, label: str) -> None:
    total, step = len(samples), max(1, len(samples) // 10)
    last = -1
    while time.time() < deadline:
        seen = sum(1 for s in samples if s.encounter_id in rows.seen)
        if seen // step != last // step and label:
            print(f"  {label}: {seen}/{total} rows", flush=True)
            last = seen
        if seen >= total or rows.error is not None:
            return
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--encounters", type=int, default=200, help="timed consultation Saves (default 200)")
    ap.add_argument("--rate", type=float, default=5.0, help="Saves per second (default 5)")
    ap.add_argument("--settle", type=float, default=0.0, help="sidecar settle window in seconds (default 0)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds after the last Save to wait for rows")
    ap.add_argument("--patients", type=int, default=20, help="patients (visits: one per encounter)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed Saves first (connections, first POST)")
    ap.add_argument("--poll-seconds", type=float, default=60.0, help="poller role interval (default 60)")
    ap.add_argument("--metrics-port", type=int, default=19564, help="base metrics port (3 consecutive)")
    ap.add_argument(
        "--whatif-no-tls",
        action="store_true",
        help="what-if: sidecar PyMySQL connections without the per-connect TLS context (bench/whatif_no_tls)",
    )
    args = ap.parse_args(argv)
    if args.encounters < 1 or args.rate <= 0:
        ap.error("--encounters >= 1 and --rate > 0")
    sigterm_as_interrupt()

    db = MariaDB()
    sim = BahmniSim(fast_factory(db))
    n = args.encounters
    t = time.monotonic()
    visits = setup(sim, n + args.warmup, min(args.patients, n + args.warmup))
    print(f"setup: {args.patients} patients, {len(visits)} visits in {time.monotonic() - t:.1f}s", flush=True)

    extra_env: dict[str, str] = {}
    if args.whatif_no_tls:
        paths = [str(Path(__file__).with_name("whatif_no_tls")), os.environ.get("PYTHONPATH", "")]
        extra_env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    sc = Sidecar(
        settle_seconds=args.settle,
        poll_seconds=args.poll_seconds,
        metrics_base_port=args.metrics_port,
        extra_env=extra_env,
    )
    replies: ReplyReader | None = None
    rows: RowPoller | None = None
    samples: list[Sample] = []
    rss: dict[str, dict[str, int]] = {}
    cpu: dict[str, float | None] = {}
    cpu_start: dict[str, float | None] = {}
    others: set[int] = set()
    try:
        replies = ReplyReader(sc.kafka.bootstrap_servers, sc.kafka.reply_topic)
        replies.start()
        t = time.monotonic()
        sc.start()
        print(f"sidecar {sc.group} ready in {time.monotonic() - t:.1f}s (settle {args.settle}s)", flush=True)
        rows = RowPoller(db)
        rows.start()

        warm = [save(sim, visits[n + k], n + k) for k in range(args.warmup)]
        warm_samples = [Sample(e.encounter_id, e.uuid, e.committed_at) for e in warm]
        for s in warm_samples:
            rows.watch(s.encounter_id)
        wait_for(warm_samples, rows, time.time() + 30, "")
        print(f"warm-up: {sum(s.encounter_id in rows.seen for s in warm_samples)}/{args.warmup} rows", flush=True)
        cpu_start = {role: proc_cpu_seconds(p.pid) for role, p in sc.procs.items()}
        ours = {p.pid for p in sc.procs.values()}
        others |= other_sidecars(ours)

        print(f"saving {n} consultations at {args.rate}/s ...", flush=True)
        step = max(1, n // 10)
        start = time.monotonic()
        for i in range(n):
            delay = start + i / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            ref = save(sim, visits[i], i)
            samples.append(Sample(ref.encounter_id, ref.uuid, ref.committed_at))
            rows.watch(ref.encounter_id)
            if (i + 1) % step == 0 or i + 1 == n:
                others |= other_sidecars(ours)
                print(
                    f"  saved {i + 1}/{n}  rows {rows.seen_count() - len(warm_samples)}  replies {replies.count}"
                    f"  (+{time.monotonic() - start:.1f}s)",
                    flush=True,
                )
        save_span = samples[-1].committed - samples[0].committed
        deadline = time.time() + args.timeout
        wait_for(samples, rows, deadline, "waiting")
        others |= other_sidecars(ours)
        time.sleep(0.3)  # let the last replies arrive on the reply topic
        for role, proc in sc.procs.items():
            rss[role] = proc_status(proc.pid)
            cpu[role] = proc_cpu_seconds(proc.pid)
        consumer_metrics = scrape(sc.metrics_ports["consumer"])
    finally:
        for thread in (rows, replies):
            if thread is not None:
                thread.stopping.set()
        sc.stop()
        for thread in (rows, replies):
            if thread is not None:
                thread.join(timeout=5)
    for thread in (rows, replies):
        if thread is not None and thread.error is not None:
            raise RuntimeError(f"{thread.name} failed") from thread.error
    assert rows is not None and replies is not None

    logged = writer_log_times(sc.log("writer"), samples[0].committed - 1)
    for s in samples:
        if s.encounter_id in rows.seen:
            s.row_seen, s.row_status = rows.seen[s.encounter_id]
        s.row_log = logged.get(s.uuid)
        msg = replies.get(s.uuid)
        if msg is not None and msg.timings is not None:
            tm = msg.timings
            s.captured = tm.captured_ms / 1000 if tm.captured_ms else None
            s.submit = tm.submit_seconds
            s.published = tm.published_ms / 1000 if tm.published_ms else None
            s.reply_status = msg.response.iclm_status
    report(args, sc, samples, save_span, rss, cpu, cpu_start, consumer_metrics, others)
    return 0


def report(
    args: argparse.Namespace,
    sc: Sidecar,
    samples: list[Sample],
    save_span: float,
    rss: dict[str, dict[str, int]],
    cpu: dict[str, float | None],
    cpu_start: dict[str, float | None],
    consumer_metrics: dict[str, float],
    others: set[int],
) -> None:
    ok = [s for s in samples if s.row_seen is not None]
    total = [s.row_seen - s.committed for s in ok if s.row_seen is not None]
    timed = [s for s in ok if s.captured is not None and s.submit is not None and s.row_seen is not None]
    capture = [s.captured - s.committed for s in timed if s.captured is not None]
    submit = [s.submit for s in timed if s.submit is not None]
    sidecar = [
        (s.row_seen - s.committed) - (s.captured - s.committed) - s.submit
        for s in timed
        if s.row_seen is not None and s.captured is not None and s.submit is not None
    ]
    precise = [
        s.row_log - s.captured - s.submit
        for s in timed
        if s.row_log is not None and s.captured is not None and s.submit is not None
    ]
    consumer_own = [
        s.published - s.captured - s.submit
        for s in timed
        if s.published is not None and s.captured is not None and s.submit is not None
    ]
    downstream = [s.row_log - s.published for s in timed if s.row_log is not None and s.published is not None]
    statuses: dict[str, int] = {}
    for s in ok:
        statuses[s.row_status or "?"] = statuses.get(s.row_status or "?", 0) + 1
    span = max((s.row_seen for s in ok if s.row_seen is not None), default=0.0) - samples[0].committed

    def target(values: list[float], limit: float) -> str:
        if not values:
            return "n/a"
        p99 = percentile(values, 99)
        return f"target p99 <= {limit * 1000:.0f} ms: {'MET' if p99 <= limit else 'MISSED'}"

    print()
    whatif = "  [WHAT-IF: sidecar PyMySQL without TLS context]" if args.whatif_no_tls else ""
    print(
        f"=== e2e latency: {len(samples)} encounters at {args.rate}/s, settle {args.settle}s, group {sc.group}{whatif}"
    )
    print(f"settle window (deliberate policy wait, excluded below): {args.settle:.1f} s")
    print(f"saves: {len(samples)} in {save_span:.1f}s = {(len(samples) - 1) / max(save_span, 1e-9):.2f}/s achieved")
    print(f"successes (iclm_claim row): {len(ok)}   failures (no row at deadline): {len(samples) - len(ok)}")
    print(f"row status: {statuses}   replies with timings: {len(timed)}")
    print("latency (ms), commit -> iclm_claim row:")
    print(f"  end to end (poll ~20ms)    {summary_ms(total)}   [{target(total, TARGET_E2E_P99)}]")
    print(f"  capture (captured-commit)  {summary_ms(capture)}")
    print(f"  openIMIS POST (submit)     {summary_ms(submit)}")
    print(f"  sidecar own (total-cap-POST) {summary_ms(sidecar)}   [{target(sidecar, TARGET_SIDECAR_P99)}]")
    print(f"  sidecar own, writer-log ts {summary_ms(precise)}   [{target(precise, TARGET_SIDECAR_P99)}]")
    print(f"    of which consumer (published-captured-POST) {summary_ms(consumer_own)}")
    print(f"    of which reply->row (writer log - published) {summary_ms(downstream)}")
    print(f"throughput: {len(ok) / max(span, 1e-9):.2f} claims/s over {span:.1f}s (first commit -> last row)")
    for role, st in rss.items():
        used = None
        if cpu.get(role) is not None and cpu_start.get(role) is not None:
            used = (cpu[role] or 0.0) - (cpu_start[role] or 0.0)
        per = f", {used / max(len(ok), 1) * 1000:.1f} ms CPU/claim" if used is not None else ""
        print(f"rss {role:8s}: peak (VmHWM) {mib(st.get('VmHWM'))}, now {mib(st.get('VmRSS'))}{per}")
    if consumer_metrics:
        n_sub = consumer_metrics.get("cdc_claims_submit_duration_seconds_count", 0.0)
        s_sub = consumer_metrics.get("cdc_claims_submit_duration_seconds_sum", 0.0)
        if n_sub:
            print(f"consumer metric submit_duration: mean {s_sub / n_sub * 1000:.1f} ms over {n_sub:.0f} POSTs")
    if others:
        print(
            f"WARNING: {len(others)} other sidecar consumer(s) ran during the measurement (pids {sorted(others)}):"
            " they claim our encounters too and share the CPU; figures are contaminated"
        )
    else:
        print("no other sidecar consumer seen during the measurement")
    print(f"logs: {sc.log('consumer')}, {sc.log('writer')}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; sidecar stopped", file=sys.stderr)
        sys.exit(130)
