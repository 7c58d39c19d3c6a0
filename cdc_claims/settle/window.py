"""Debounce touched encounters and visits until they are quiet enough to claim.

One encounter receives several transactions (the 60-minute session matcher, then later
edits), so claiming at the first change would send a claim per Save (``DATA_MODEL.md`` §6).
The tracker keeps one *unit* per encounter (``encounter`` mode) or per visit (``visit``
mode) and reports it *due* once:

* encounter mode: nothing touched it for ``settle_seconds`` (0 = at once);
* visit mode: the visit was closed (``date_stopped`` set) and quiet for ``settle_seconds``,
  or nothing touched it for ``visit_idle_seconds`` (when > 0), or the visit was voided and
  quiet for ``settle_seconds``.

Hand-over is tokenised so no change is lost: :meth:`SettleTracker.due` hands out each unit
with a token and does not hand it out again until :meth:`SettleTracker.done` (or
:meth:`SettleTracker.retry`) returns it. A touch that lands in between bumps the unit's
version, so ``done`` with the older token keeps the unit pending and it comes due again.

Tags tie units to Kafka offsets: every touch may carry a hashable *tag* (the source
transaction id). ``done`` returns the tags no pending unit holds any more; the caller
releases exactly those in :class:`~cdc_claims.pipeline.offsets.OffsetTracker`, so a
transaction touching two encounters is committed only after both are durable.

In visit mode an encounter touch needs its visit. The caller passes ``visit_id`` when it
knows it (encounter rows carry it, and the tracker remembers what it learned); otherwise the
encounter waits in :meth:`SettleTracker.needs_visit_lookup` until :meth:`SettleTracker.resolve`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from cdc_claims.capture.touched import Touches
from cdc_claims.lru import Lru
from cdc_claims.settings import SettleSettings, UnitKind

DueReason = Literal["quiet", "closed", "idle", "voided"]


@dataclass(frozen=True, order=True)
class Unit:
    """What one claim covers: one encounter, or one visit."""

    kind: UnitKind
    id: int

    @classmethod
    def encounter(cls, encounter_id: int) -> Unit:
        return cls("encounter", encounter_id)

    @classmethod
    def visit(cls, visit_id: int) -> Unit:
        return cls("visit", visit_id)


@dataclass(frozen=True)
class Due:
    """A unit ready to be (re)built from the current database state."""

    unit: Unit
    token: int  # give back to :meth:`SettleTracker.done` / :meth:`SettleTracker.retry`
    reason: DueReason
    voided: bool  # the unit itself was voided (the caller cancels a pending claim)
    voided_encounters: frozenset[int]  # visit mode: encounters of the visit voided meanwhile
    encounter_ids: frozenset[int]  # encounters touched since the unit was last done
    first_touched: float
    last_touched: float


@dataclass
class _State:
    """Mutable bookkeeping of one pending unit (or one encounter awaiting its visit).

    Per-touch facts are stored with the version that last set them, so ``done(token)`` can
    drop exactly what the handed-out build covered.
    """

    first: float
    last: float
    version: int = 0
    tags: dict[Hashable, int] = field(default_factory=dict)
    encounters: dict[int, int] = field(default_factory=dict)
    voided_encounters: dict[int, int] = field(default_factory=dict)
    voided_at: int | None = None  # version of the last touch that voided the unit itself
    closed: bool = False  # visit units: date_stopped known to be set
    in_flight: int | None = None  # token handed out by due()
    not_before: float = float("-inf")

    def bump(self, now: float) -> int:
        self.version += 1
        self.last = max(self.last, now)
        return self.version


class SettleTracker:
    """Pending units and their quiet periods. ``now`` is caller-supplied seconds."""

    def __init__(self, settings: SettleSettings, *, remember: int = 10_000) -> None:
        self.settings = settings
        self._units: dict[Unit, _State] = {}
        self._awaiting: dict[int, _State] = {}  # visit mode: encounter id -> touches, visit unknown
        self._tag_refs: dict[Hashable, int] = {}
        self._visit_of: Lru[int, int] = Lru(remember)  # encounter id -> visit id
        self._closed: Lru[int, bool] = Lru(remember)  # visit id -> date_stopped set

    # -- counts ---------------------------------------------------------------------------
    @property
    def pending_count(self) -> int:
        """Units waiting (in flight included) plus encounters waiting for their visit."""
        return len(self._units) + len(self._awaiting)

    @property
    def in_flight_count(self) -> int:
        return sum(1 for s in self._units.values() if s.in_flight is not None)

    def holds(self, tag: Hashable) -> bool:
        """True while some pending unit still needs the change ``tag`` stands for."""
        return tag in self._tag_refs

    def pending(self) -> list[Unit]:
        return sorted(self._units)

    # -- touching -------------------------------------------------------------------------
    def touch_encounter(
        self,
        encounter_id: int,
        now: float,
        *,
        visit_id: int | None = None,
        voided: bool = False,
        tag: Hashable | None = None,
    ) -> Unit | None:
        """Record a change to an encounter. Returns the unit now holding it, or ``None`` in
        visit mode when the visit is unknown (see :meth:`needs_visit_lookup`)."""
        if visit_id is not None:
            self._visit_of.put(encounter_id, visit_id)
        if self.settings.mode == "encounter":
            unit = Unit.encounter(encounter_id)
            self._touch(unit, now, tag=tag, encounter_id=encounter_id, voided=voided)
            return unit
        known = visit_id if visit_id is not None else self._visit_of.get(encounter_id)
        if known is None:
            state = self._awaiting.get(encounter_id)
            if state is None:
                state = self._awaiting[encounter_id] = _State(first=now, last=now)
            self._apply(state, now, tag=tag, encounter_id=encounter_id, voided_encounter=voided)
            return None
        unit = Unit.visit(int(known))
        self._touch(unit, now, tag=tag, encounter_id=encounter_id, voided_encounter=voided)
        return unit

    def touch_visit(
        self,
        visit_id: int,
        now: float,
        *,
        closed: bool | None = None,
        voided: bool = False,
        tag: Hashable | None = None,
    ) -> Unit | None:
        """Record a change to a visit. ``closed``: True = date_stopped set, False = reopened,
        None = unchanged/unknown. Encounter mode has no visit units: returns ``None``."""
        if closed is not None:
            self._closed.put(visit_id, closed)
        if self.settings.mode == "encounter":
            return None
        unit = Unit.visit(visit_id)
        self._touch(unit, now, tag=tag, voided=voided)
        return unit

    def record(
        self, touches: Touches, now: float, *, tag: Hashable | None = None, visit_of: Mapping[int, int] | None = None
    ) -> frozenset[Unit]:
        """Record everything one transaction touched; returns the units that now hold ``tag``.

        ``visit_of`` adds encounter -> visit knowledge the caller has beyond the transaction.
        ``patient_ids`` and ``order_ids_to_resolve`` need the database: the caller resolves
        them to encounters and calls :meth:`touch_encounter` with the same tag.
        """
        known = {**(visit_of or {}), **touches.encounter_visits}
        units: set[Unit] = set()
        for visit_id in sorted(touches.visit_ids | touches.visits_voided):
            closed: bool | None = None
            if visit_id in touches.visits_closed:
                closed = True
            elif visit_id in touches.visits_reopened:
                closed = False
            unit = self.touch_visit(visit_id, now, closed=closed, voided=visit_id in touches.visits_voided, tag=tag)
            units.update([unit] if unit else [])
        for encounter_id in sorted(touches.encounter_ids | touches.encounters_voided):
            unit = self.touch_encounter(
                encounter_id,
                now,
                visit_id=known.get(encounter_id),
                voided=encounter_id in touches.encounters_voided,
                tag=tag,
            )
            units.update([unit] if unit else [])
        return frozenset(units)

    # -- visit lookups --------------------------------------------------------------------
    def needs_visit_lookup(self) -> list[int]:
        """Visit mode: encounter ids touched whose visit the tracker does not know."""
        return sorted(self._awaiting)

    def resolve(self, encounter_id: int, visit_id: int | None, *, visit_closed: bool | None = None) -> Unit | None:
        """Attach an encounter awaiting lookup to its visit; returns the unit now holding its
        changes (``None`` if nothing was awaiting). ``visit_id=None`` (the encounter is gone,
        or has no visit) falls back to an encounter unit, so its changes are still looked at
        and its tags released. ``visit_closed`` is what the lookup saw of ``date_stopped``."""
        if visit_id is not None:
            self._visit_of.put(encounter_id, visit_id)
            if visit_closed is not None:
                self._closed.put(visit_id, visit_closed)
        state = self._awaiting.pop(encounter_id, None)
        if state is None:
            return None
        unit = Unit.visit(visit_id) if visit_id is not None else Unit.encounter(encounter_id)
        # The quiet period runs from the encounter's own last change, not from the lookup.
        target = self._state_for(unit, state.last)
        target.version += 1
        version = target.version
        target.first = min(target.first, state.first)
        target.last = max(target.last, state.last)
        for tag in state.tags:
            self._hold(target, tag, version, already_counted=True)
        for enc in state.encounters:
            target.encounters[enc] = version
        for enc in state.voided_encounters:
            if unit.kind == "encounter":
                target.voided_at = version
            else:
                target.voided_encounters[enc] = version
        if unit.kind == "visit":
            target.closed = self._closed.get(unit.id) is True
        return unit

    # -- handing out ----------------------------------------------------------------------
    def due(self, now: float, limit: int | None = None) -> list[Due]:
        """Units ready now, oldest change first, at most ``limit`` of them (the rest stay ready
        for the next call). Each is handed out once until done/retry."""
        ready: list[tuple[float, Unit, _State, DueReason]] = []
        for unit, state in self._units.items():
            if state.in_flight is not None or now < state.not_before:
                continue
            reason = self._reason(unit, state, now)
            if reason is not None:
                ready.append((state.last, unit, state, reason))
        ready.sort(key=lambda item: (item[0], item[1]))
        handed: list[Due] = []
        for _, unit, state, reason in ready if limit is None else ready[: max(0, limit)]:
            state.in_flight = state.version
            handed.append(
                Due(
                    unit=unit,
                    token=state.version,
                    reason=reason,
                    voided=state.voided_at is not None,
                    voided_encounters=frozenset(state.voided_encounters),
                    encounter_ids=frozenset(state.encounters),
                    first_touched=state.first,
                    last_touched=state.last,
                )
            )
        return handed

    def _reason(self, unit: Unit, state: _State, now: float) -> DueReason | None:
        quiet = now - state.last >= self.settings.settle_seconds
        if unit.kind == "encounter":
            return ("voided" if state.voided_at is not None else "quiet") if quiet else None
        if quiet and state.voided_at is not None:
            return "voided"
        if quiet and state.closed:
            return "closed"
        idle = self.settings.visit_idle_seconds
        if idle > 0 and now - state.last >= idle:
            return "idle"
        return None

    def done(self, unit: Unit, token: int) -> frozenset[Hashable]:
        """The build handed out with ``token`` is durable (submitted, held, cancelled...).

        Returns the tags no pending unit needs any more. A stale token is a no-op.
        """
        state = self._units.get(unit)
        if state is None or state.in_flight != token:
            return frozenset()
        released: set[Hashable] = set()
        for tag, version in list(state.tags.items()):
            if version <= token:
                del state.tags[tag]
                if self._unref(tag):
                    released.add(tag)
        if state.version == token:
            del self._units[unit]
            return frozenset(released)
        state.in_flight = None
        state.encounters = {e: v for e, v in state.encounters.items() if v > token}
        state.voided_encounters = {e: v for e, v in state.voided_encounters.items() if v > token}
        if state.voided_at is not None and state.voided_at <= token:
            state.voided_at = None
        return frozenset(released)

    def retry(self, unit: Unit, token: int, now: float, delay: float) -> bool:
        """The build failed transiently (e.g. database down): hand the unit out again no
        earlier than ``now + delay``, keeping every change. False for a stale token."""
        state = self._units.get(unit)
        if state is None or state.in_flight != token:
            return False
        state.in_flight = None
        state.not_before = now + delay
        return True

    # -- internals ------------------------------------------------------------------------
    def _state_for(self, unit: Unit, now: float) -> _State:
        state = self._units.get(unit)
        if state is None:
            state = self._units[unit] = _State(first=now, last=now)
        return state

    def _touch(
        self,
        unit: Unit,
        now: float,
        *,
        tag: Hashable | None,
        encounter_id: int | None = None,
        voided: bool = False,
        voided_encounter: bool = False,
    ) -> None:
        state = self._state_for(unit, now)
        version = self._apply(state, now, tag=tag, encounter_id=encounter_id, voided_encounter=voided_encounter)
        if voided:
            state.voided_at = version
        if unit.kind == "visit":
            state.closed = self._closed.get(unit.id) is True

    def _apply(
        self,
        state: _State,
        now: float,
        *,
        tag: Hashable | None,
        encounter_id: int | None,
        voided_encounter: bool,
    ) -> int:
        version = state.bump(now)
        if tag is not None:
            self._hold(state, tag, version)
        if encounter_id is not None:
            state.encounters[encounter_id] = version
            if voided_encounter:
                state.voided_encounters[encounter_id] = version
        return version

    def _hold(self, state: _State, tag: Hashable, version: int, *, already_counted: bool = False) -> None:
        """File ``tag`` under ``state``; ``already_counted``: the reference moves from elsewhere."""
        if tag in state.tags:
            if already_counted:
                self._unref(tag)
        elif not already_counted:
            self._tag_refs[tag] = self._tag_refs.get(tag, 0) + 1
        state.tags[tag] = version

    def _unref(self, tag: Hashable) -> bool:
        count = self._tag_refs.get(tag, 0) - 1
        if count <= 0:
            self._tag_refs.pop(tag, None)
            return True
        self._tag_refs[tag] = count
        return False
