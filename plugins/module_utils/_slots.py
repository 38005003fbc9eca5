# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Many slots of a pool on one libvirt host at once: the core of the rum_slots module.

Internal to the rum.pool collection: not a public API. The rum_slots action plugin works on the
controller (GitHub) and calls the module on the hypervisor at most twice per batch:

``prepare``
    observe the pool's VMs, plan (with the runners the controller listed), take the lock of every
    slot that needs work, look again under the locks, check each slot's generation, and do at once
    what needs nothing from GitHub: start a slot's staged generation (the slot's old VM destroyed
    and renamed away first), remove staged and retired generations, remove a VM whose runner is not
    online. A slot that needs a new runner (a boot, a stage) or its runner deregistered first (a VM
    whose runner is online) is handed back with its lock still held.
``act``
    with the controller's runner credentials: boot, stage and remove those slots; release the locks.

Every generation made here is first defined under its staged name ``<slot>.<suffix>`` (its own
directory, overlay, seed and network filter, by VMManager with state=present) and then promoted:
renamed to the slot's name, its ``staged`` label dropped and its ``created_at`` set, started. A
boot promotes at once; a stage waits for the slot's job to end. A slot's old VM is destroyed and
renamed ``<slot>_<suffix>`` (retired) before the promotion, and removed after the start, so the
slot is back in service as soon as the new VM runs. A VM labelled ``staged`` was never started:
the label goes before the start, so no generation is ever started twice.

Work on different slots runs in ``concurrency`` threads; the slots' locks are taken one after the
other in the slots' order (so two batches never wait for each other crosswise). The libvirt
connection, the VM manager, the lock directory and the clock are passed in for tests.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import os
import shutil
import threading
import time
import typing as t

from ansible_collections.rum.pool.plugins.module_utils import _domain as domain
from ansible_collections.rum.pool.plugins.module_utils import _flock as flock
from ansible_collections.rum.pool.plugins.module_utils import _libvirt as lv
from ansible_collections.rum.pool.plugins.module_utils import _lock as locks
from ansible_collections.rum.pool.plugins.module_utils import _nftables as nftables
from ansible_collections.rum.pool.plugins.module_utils import _nwfilter as nwfilter
from ansible_collections.rum.pool.plugins.module_utils import _pool as planner
from ansible_collections.rum.pool.plugins.module_utils import _runner_guest as runner_guest
from ansible_collections.rum.pool.plugins.module_utils import _seed_eject as seed_eject
from ansible_collections.rum.pool.plugins.module_utils import _slot as contract
from ansible_collections.rum.pool.plugins.module_utils import _storage as storage
from ansible_collections.rum.pool.plugins.module_utils import _vm as vm

MODES = planner.BATCH_MODES
LOCK_DIR = "/run/lock/rum-pool"  # rum_lock's default: the slot-by-slot path takes the same locks
STALE_AFTER = 3600
# The pool settings that shape a generation: a staged generation made with others is not started.
CONFIG_KEYS = ("backend", "image", "vm", "labels", "runner_group", "runner_group_id", "registration",
               "isolation", "runner_dir", "runner_user", "cache_url")


class SlotsError(Exception):
    """The batch cannot run at all (bad settings, no libvirt); one slot's failure is in its result."""


def generation_config(pool: t.Mapping[str, t.Any]) -> str:
    """A short hash of the settings that shape a generation (``CONFIG_KEYS``), its ``config`` label."""
    data = {key: pool.get(key) for key in CONFIG_KEYS}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Seen(t.NamedTuple):
    """One VM of the pool on this host, as looked at."""

    name: str
    kind: str  # slot, staged or retired
    slot: str
    state: str
    labels: dict
    meta: dict
    uuid: str

    def entry(self) -> dict:
        return {"name": self.name, "state": self.state, "labels": self.labels}

    @property
    def parsed(self) -> contract.SlotLabels:
        return contract.parse_labels(self.labels)


class Job:
    """One slot's work in this batch; what it did, or what it still needs, is in ``report``."""

    def __init__(self, slot: str, action: str, runner_name: str | None = None, reason: str = "",
                 online: bool = False, discard: t.Mapping[str, str] | None = None):
        self.slot = slot
        self.action = action  # create, recreate, remove, stage, discard (staged/retired VMs only), sweep (dirs)
        self.runner_name = runner_name  # the generation the request is about (the guard)
        self.reason = reason
        self.online = online  # its runner is online at GitHub: deregister it before its VM goes
        self.discard = dict(discard or {})  # VM name -> why the plan wants it removed
        self.token: str | None = None
        self.held_by: dict | None = None
        self.outcome: str | None = None  # created, recreated, removed, staged, cleaned, skipped, failed
        self.step: str | None = None  # what act still does: boot, stage, remove
        self.new_runner: str | None = None
        self.runner_id: int | None = None  # the new runner's id at GitHub, from the controller (act)
        self.runner_url: str | None = None  # where a registration-token runner registers (act)
        self.deregister: dict | None = None  # {name, id}: the controller deregisters it before act
        self.delete: list[dict] = []  # runner records for the controller to delete afterwards
        self.started: str | None = None  # the runner of the generation this job started (wait_online)
        self.changes: list[str] = []
        self.timings: dict[str, float] = {}

    @classmethod
    def from_report(cls, report: t.Mapping[str, t.Any]) -> "Job":
        """The job prepare handed back (its ``report``), for act in another module run."""
        job = cls(str(report.get("slot")), str(report.get("action")), reason=str(report.get("reason") or ""))
        job.token, job.step, job.new_runner = report.get("token"), report.get("step"), report.get("new_runner")
        job.outcome, job.deregister = report.get("outcome"), report.get("deregister")
        job.runner_id, job.runner_url = report.get("runner_id"), report.get("runner_url")
        job.changes = list(report.get("changes") or ())  # what prepare did stays in the slot's report
        job.delete = list(report.get("delete") or ())  # and the records it freed, deleted after act
        job.started = report.get("started")
        job.timings = dict(report.get("timings") or {})
        return job

    def say(self, outcome: str, reason: str) -> None:
        self.outcome, self.reason = outcome, reason

    def report(self) -> dict[str, t.Any]:
        out = {"slot": self.slot, "action": self.action, "outcome": self.outcome, "reason": self.reason,
               "step": self.step, "new_runner": self.new_runner, "deregister": self.deregister,
               "delete": self.delete, "token": self.token, "changes": self.changes, "timings": self.timings,
               "started": self.started}
        if self.held_by is not None:
            out["held_by"] = self.held_by
        return out


def _runner_of(seen: Seen) -> dict | None:
    labels = seen.parsed
    if not labels.runner_name and labels.runner_id is None:
        return None
    return {"name": labels.runner_name, "id": labels.runner_id}


def _retired_as(slot: str, runner_name: str | None) -> str | None:
    """The retired name of ``slot``'s generation ``runner_name``, if it is one of its generations."""
    try:
        contract.staged_name(runner_name)  # a runner name at all
        return contract.retired_name(slot, runner_name)
    except contract.SlotError:
        return None


class SlotHost:
    """The pool's slots on this host (``pool`` is the pool's settings mapping, without GitHub's)."""

    def __init__(self, pool: t.Mapping[str, t.Any], *, check_mode: bool = False,
                 connect: t.Callable[[str], t.Any] = lv.connect, manager: t.Callable[..., t.Any] = vm.VMManager,
                 lock_dir: str = LOCK_DIR, holder: dict | None = None, owner: str = "rum_slots",
                 clock: t.Callable[[], float] = time.time, log: t.Callable[[str], None] = lambda msg: None,
                 watcher: t.Callable[[str, t.Callable[[str], t.Any]], bool] = seed_eject.ensure_watcher,
                 run: t.Callable[[list], tuple[int, str, str]] | None = None):
        if pool.get("backend") != "libvirt":
            raise SlotsError(f"rum_slots works on libvirt hosts; this pool's backend is {pool.get('backend')!r}")
        self.pool = dict(pool)
        self.name = contract.validate_pool_name(pool.get("name"))
        self.host = contract.host_short_name(pool.get("host"))
        self.vm_options = dict(pool.get("vm") or {})
        self.uri = self.vm_options.get("uri") or lv.DEFAULT_URI
        self.storage_dir = self.vm_options.get("storage_dir") or storage.default_storage_dir(self.uri)
        self.config = generation_config(pool)
        self.concurrency = max(1, int(pool.get("concurrency") or 1))
        self.check_mode = check_mode
        self.connect = connect
        self.manager = manager
        self.locks = locks.LockDir(lock_dir, clock=clock)
        self.holder = holder
        self.owner = owner
        self.clock = clock
        self.log = log
        self.watcher = watcher
        self.run_cmd = run
        self._conn: t.Any = None
        self._conn_lock = threading.Lock()
        self._seed_watch = False
        self._filters_in_use: set[str] | None = None  # what the host's domains name, read once (_orphan_filters)
        self._filters_lock = threading.Lock()
        self._taps_pruned = False  # the nftables engine's stray taps, pruned once per run (_prune_taps)
        self._runners: list[dict] = []  # the pool's runners at GitHub, as the controller listed them (plan)
        self._pruned: set[str] = set()  # the plan's orphan runners (pruned by the controller)

    # -- the connection and what is there ---------------------------------------------------------
    def conn(self):
        with self._conn_lock:
            if self._conn is None:
                self._conn = self.connect(self.uri)
            return self._conn

    def close(self) -> None:
        with self._conn_lock:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.close()
                self._conn = None

    def look(self, slots: t.Collection[str] | None = None) -> list[Seen]:
        """The pool's VMs on this host (only those of ``slots`` when given): slots', staged, retired."""
        prefix = contract.slot_prefix(self.name, self.host)
        found = []
        for dom in self.conn().listAllDomains(0):
            name = dom.name()
            kind = contract.parse_vm_name(name, [self.name]) if name.startswith(prefix) else None
            if kind is None or kind.slot.host != self.host or (slots is not None and kind.slot.name not in slots):
                continue
            try:
                xml = lv.inactive_xml(dom)
                meta = vm.read_meta(xml)
                state = lv.state_name(dom)
            except Exception:  # pylint: disable=broad-except  # gone meanwhile: not there
                continue
            labels = dict(meta.get("labels") or {})
            if not meta or not contract.labels_match(contract.parse_labels(labels), self.name, self.host):
                continue
            found.append(Seen(name, kind.kind, kind.slot.name, state, labels, meta, dom.UUIDString()))
        return sorted(found, key=lambda seen: seen.name)

    def plan(self, seen: t.Sequence[Seen], runners: t.Any, *, absent: bool = False) -> dict[str, t.Any]:
        self._runners = [dict(runner) for runner in runners or () if isinstance(runner, t.Mapping)]
        found = planner.plan(pool=self.name, host=self.host, size=0 if absent else self.pool.get("size", 0),
                             vms=[s.entry() for s in seen], runners=runners, now=self.clock(),
                             # a teardown spares no offline runner of the host for being young
                             online_timeout=0 if absent else self.pool.get("online_timeout", 600),
                             stage=bool(self.pool.get("stage")) and not absent, config=self.config)
        self._pruned = {orphan["name"] for orphan in found["orphans"]}  # the controller prunes these
        return found

    # -- prepare ------------------------------------------------------------------------------------
    def jobs_from_plan(self, plan: t.Mapping[str, t.Any]) -> list[Job]:
        jobs: dict[str, Job] = {}
        for row in plan["slots"]:
            if row["action"] in ("create", "recreate", "remove", "stage"):
                online = row["runner_status"] == "online" and not row["runner_busy"]
                held = row["runner_name"] if row["action"] != "create" else None
                jobs[row["slot"]] = Job(row["slot"], row["action"], held, row["reason"], online=online)
        for gone in plan["discard"]:
            job = jobs.setdefault(gone["slot"], Job(gone["slot"], "discard", reason=gone["reason"]))
            job.discard[gone["vm"]] = gone["reason"]
        return [jobs[slot] for slot in sorted(jobs, key=self._index)]

    def _index(self, slot: str) -> int:
        found = contract.parse_slot(slot, [self.name])
        return found.index if found is not None else 0

    def prepare(self, jobs: t.Sequence[Job], *, take_over: t.Mapping[str, str] | None = None,
                lock_timeout: float = 0) -> list[Job]:
        """Lock each job's slot, look under the locks, and do what needs nothing from GitHub."""
        if self.check_mode:
            seen = self.look({job.slot for job in jobs})
            for job in jobs:
                self._decide(job, seen, dry=True)
            return list(jobs)
        # one lock after the other, in the slots' order, never several waits at once: two batches
        # wanting the same slots then wait for each other in one order and cannot deadlock
        for job in sorted(jobs, key=lambda job: self._index(job.slot)):
            self._lock(job, (take_over or {}).get(job.slot), lock_timeout)
        locked = [job for job in jobs if job.token]
        seen = self.look({job.slot for job in locked}) if locked else []
        self._parallel(locked, lambda job: self._guarded(job, lambda: self._decide(job, seen)))
        self._after()
        return list(jobs)

    def act(self, jobs: t.Sequence[Job], credentials: t.Mapping[str, t.Any]) -> list[Job]:
        """Boot, stage and remove the jobs prepare handed back (locks held), then unlock them."""
        seen = self.look({job.slot for job in jobs})
        self._parallel(jobs, lambda job: self._guarded(job, lambda: self._act(job, seen, credentials.get(job.slot))))
        self._after()
        return list(jobs)

    def _parallel(self, jobs: t.Sequence[Job], work: t.Callable[[Job], None]) -> None:
        if len(jobs) <= 1 or self.concurrency == 1:
            for job in jobs:
                work(job)
            return
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(self.concurrency, len(jobs))) as pool:
            for future in [pool.submit(work, job) for job in jobs]:
                future.result()

    def _guarded(self, job: Job, work: t.Callable[[], None]) -> None:
        """Run ``work``; a failure is the job's outcome; the lock goes unless work is left for act."""
        try:
            work()
        except Exception as exc:  # pylint: disable=broad-except  # reported per slot, the others go on
            job.step = None
            known = isinstance(exc, (vm.VMError, SlotsError, lv.LibvirtError))
            job.say("failed", str(exc) if known else f"{type(exc).__name__}: {exc}")
        if job.step is None:
            self.unlock(job)

    def _lock(self, job: Job, take_over: str | None, timeout: float) -> None:
        try:
            record = self.locks.acquire(job.slot, timeout=timeout, stale_after=STALE_AFTER,
                                        owner=f"{job.action} of {job.slot} ({self.owner})", holder=self.holder,
                                        take_over=take_over)
        except locks.LockHeld as exc:
            job.held_by = exc.held_by
            job.say("skipped", f"its lock is held: {exc}")
            return
        job.token = record["token"]
        if record.get("took_over"):
            job.changes.append(f"took over the lock of {locks.describe_holder(record['took_over'])} "
                               f"({record.get('took_over_why')})")

    def unlock(self, job: Job) -> None:
        if job.token:
            with contextlib.suppress(locks.LockError):
                self.locks.release(job.slot, job.token)
            job.token = None

    def _after(self) -> None:
        """Start the seed watcher once, with no other thread running (it forks)."""
        if self._seed_watch and not self.check_mode:
            self._seed_watch = False
            if self.watcher(self.storage_dir, lv.connect):
                self.log(f"started the seed watcher of {self.storage_dir}")

    # -- deciding, under the slot's lock --------------------------------------------------------------
    def _usable(self, seen: Seen, job: Job) -> str | None:
        """Why a staged generation (or a never started slot VM) may not be started, or None."""
        if not self.pool.get("stage"):
            return "staging is off (runner_pool_stage, runner_pool_batch, jit registration)"
        return job.discard.get(seen.name) or planner.staged_problem(
            state=seen.state, labels=seen.labels, now=self.clock(), config=self.config)

    def _decide(self, job: Job, seen: t.Sequence[Seen], dry: bool = False) -> None:
        mine = [s for s in seen if s.slot == job.slot]
        current = next((s for s in mine if s.kind == "slot"), None)
        staged = sorted((s for s in mine if s.kind == "staged"), key=lambda s: -(s.parsed.created_at or 0))
        retired = [s for s in mine if s.kind == "retired"]
        ready = next((s for s in staged if self._usable(s, job) is None), None)
        unstarted = current is not None and current.parsed.staged and current.state == "shutoff" and \
            self._usable(current, job) is None
        leftovers = retired + [s for s in staged if s is not ready]

        if job.action == "sweep":
            if not mine:
                self._sweep(job, dry)
            job.say("cleaned" if job.changes else "skipped", job.reason if job.changes else "nothing left to remove")
            return
        if job.action == "discard":
            self._clean(job, leftovers, dry)
            job.say("cleaned" if leftovers else "skipped", job.reason if leftovers else "nothing left to remove")
            return
        guard = contract.check_generation(action=job.action, slot=job.slot, pool=self.name, host=self.host,
                                          vm=current.entry() if current else None, runner_name=job.runner_name)
        if not guard["act"] and job.action == "recreate" and (current is None or unstarted) and \
                _retired_as(job.slot, job.runner_name) in {s.name for s in retired}:
            guard = dict(guard, act=True, outcome="recreated",
                         reason=f"a swap away from runner {job.runner_name} was interrupted")
        if not guard["act"]:
            self._clean(job, leftovers, dry)
            job.say("skipped", guard["reason"])
            return
        if job.action in ("create", "recreate", "remove"):
            self._stray_runners(job, mine)
        if job.action == "remove":
            if job.online and current is not None and not dry:
                job.step, job.deregister = "remove", _runner_of(current)
                job.say("removed", guard["reason"])
                return
            self._clean(job, ([current] if current else []) + staged + retired, dry)
            self._sweep(job, dry)
            job.say("removed", guard["reason"])
            return
        if job.action == "stage":
            if ready is not None:
                self._clean(job, leftovers, dry)
                job.say("skipped", f"it already has a staged generation ({ready.parsed.runner_name})")
            elif current is None or current.state not in planner.RUNNING_STATES:
                self._clean(job, leftovers, dry)
                job.say("skipped", f"its VM is {current.state if current else 'gone'}: its job is over")
            else:
                self._clean(job, leftovers, dry)
                job.step, job.new_runner = "stage", contract.runner_name(job.slot, self.clock())
                job.say("staged", guard["reason"])
            return
        # create, recreate: start the next generation if one is waiting, else boot one
        nxt = current if unstarted else ready
        if nxt is None:
            job.step, job.new_runner = "boot", contract.runner_name(job.slot, self.clock())
            job.say(guard["outcome"], guard["reason"])
            if dry:
                return
            self._clean(job, leftovers, dry)
            if not mine:  # its VM deleted behind the pool's back: what that left goes too
                self._sweep(job, dry)
            return
        job.say(guard["outcome"], f"{guard['reason']}; started its staged generation {nxt.parsed.runner_name}")
        if dry:
            job.changes.append(f"start staged generation {nxt.name}")
            return
        old = current if current is not None and current is not nxt else None
        retired_now = self._promote(job, nxt, old)
        self._clean(job, [s for s in leftovers if s is not nxt] + retired_now, dry)
        self._link(job.slot, nxt)

    def _stray_runners(self, job: Job, mine: t.Sequence[Seen]) -> None:
        """The slot's runner records that none of its VMs holds, offline and idle, go to ``delete``.

        Runners are minted under the slot's lock, which this run holds: such a record was left by a
        VM deleted by hand or by a run cut short, also one minted moments ago (which the plan's
        orphan prune spares, not knowing the slot's lock). The slot-by-slot path prunes the slot's
        offline runners the same way. Only a converge or a teardown lists the runners.
        """
        held = {seen.parsed.runner_name for seen in mine}
        listed = {runner.get("name") for runner in job.delete} | {(job.deregister or {}).get("name")} | self._pruned
        for runner in self._runners:
            name = runner.get("name")
            found = contract.parse_runner_name(name, [self.name])
            if found is None or found.host != self.host or found.slot != job.slot or name in held or name in listed:
                continue
            if runner.get("status") == "offline" and not runner.get("busy"):
                job.delete.append({"name": name, "id": runner.get("id")})
                job.changes.append(f"deregister runner {name} (no VM of the slot holds it)")

    def _act(self, job: Job, seen: t.Sequence[Seen], credential: t.Any) -> None:
        mine = [s for s in seen if s.slot == job.slot]
        current = next((s for s in mine if s.kind == "slot"), None)
        step, job.step = job.step, None
        if step == "remove":
            if not credential or not credential.get("deregistered"):
                job.say("skipped", "draining: its runner could not be deregistered (it may have taken a job): "
                                   "the slot is removed after the job")
                return
            self._clean(job, mine, False)
            self._sweep(job, False)
            return
        if step not in ("boot", "stage") or not job.new_runner:
            raise SlotsError(f"slot {job.slot}: nothing to do in act (prepare said {step!r})")
        if credential is None:
            raise SlotsError(f"slot {job.slot}: no runner credential for {job.new_runner}")
        made = self._define(job, credential)
        if step == "stage":
            return
        self._clean(job, self._promote(job, made, current), False)
        self._link(job.slot, made)

    # -- the steps ----------------------------------------------------------------------------------
    def _timed(self, job: Job, what: str, work: t.Callable[[], t.Any]) -> t.Any:
        start = time.monotonic()
        try:
            return work()
        finally:
            job.timings[what] = round(job.timings.get(what, 0.0) + time.monotonic() - start, 4)

    def vm_params(self, name: str, **more: t.Any) -> t.Any:
        values = dict(self.vm_options)
        values.update(name=name, uri=self.uri, storage_dir=self.storage_dir, **more)
        return vm.VMParams.from_dict(values)

    def _define(self, job: Job, credential: t.Any) -> Seen:
        """The new generation, defined under its staged name and never started."""
        runner = job.new_runner
        labels = contract.build_labels(pool=self.name, host=self.host, slot=job.slot, backend="libvirt",
                                       runner_name=runner, runner_id=job.runner_id,
                                       created_at=self.clock(), staged=True, config=self.config)
        secret = credential.get("jit_config") or {
            "token": credential.get("token"), "url": job.runner_url, "name": runner,
            "labels": self.pool.get("labels"), "runner_group": self.pool.get("runner_group") or "Default"}
        try:
            user_data = runner_guest.runner_user_data(secret, runner_dir=self.pool.get("runner_dir"),
                                                      runner_user=self.pool.get("runner_user"),
                                                      cache_url=self.pool.get("cache_url"))
        except runner_guest.RunnerGuestError as exc:
            raise SlotsError(f"slot {job.slot}: {exc}") from None
        name = contract.staged_name(runner)
        isolation = self.pool.get("isolation") or {}
        params = self.vm_params(name, state="present", image=self.pool.get("image"), hostname=runner,
                                generate_ssh_key=bool(self.vm_options.get("generate_ssh_key", False)),
                                user_data=user_data, labels=labels, seed_eject=True,
                                network_filter=isolation if isolation else None)
        result = self._timed(job, "define", lambda: self._manage(params))
        job.changes.append(f"define {name}")
        dom = self.conn().lookupByName(name)
        meta = vm.read_meta(lv.inactive_xml(dom))
        return Seen(name, "staged", job.slot, "shutoff", labels, meta, result["vm"].get("uuid") or dom.UUIDString())

    def _promote(self, job: Job, nxt: Seen, old: Seen | None) -> list[Seen]:
        """Destroy and rename away the slot's old VM, then rename, mark and start ``nxt``.

        Returns the old VM, now retired, for the caller to remove once the new one runs.
        """
        conn = self.conn()
        lock = vm.Paths.for_vm(self.storage_dir, job.slot).lock
        os.makedirs(os.path.dirname(lock), mode=0o700, exist_ok=True)
        retired = []
        with flock.held(lock):
            if old is not None:
                dom = conn.lookupByUUIDString(old.uuid)
                self._timed(job, "destroy", lambda: lv.destroy(dom))
                retired.append(old._replace(name=contract.retired_name(job.slot, old.parsed.runner_name),
                                            kind="retired", state="shutoff"))
                self._rename(dom, retired[0].name)
                job.changes.append(f"retire {old.name} as {retired[0].name}")
            dom = conn.lookupByUUIDString(nxt.uuid)
            if nxt.name != job.slot:
                self._rename(dom, job.slot)
            labels = {k: v for k, v in nxt.labels.items() if k != "staged"}
            labels["created_at"] = str(int(self.clock()))
            self._set_labels(dom, labels)
            self._timed(job, "start", lambda: self._boot(job, dom))
            job.changes.append(f"start {nxt.name} as {job.slot}")
            job.started = nxt.parsed.runner_name
        self._guard_guest(job, dom, nxt)
        return retired

    @staticmethod
    def _boot(job: Job, dom) -> None:
        """Start a generation; NICs of the nftables engine are held by the ruleset first."""
        try:
            nftables.start(dom, lv.start, vm.read_meta)
        except nftables.NftError as exc:
            raise SlotsError(f"slot {job.slot}: network_filter: {exc}") from None

    def _rename(self, dom, name: str) -> None:
        try:
            dom.rename(name, 0)
        except Exception as exc:  # pylint: disable=broad-except  # libvirtError: say which rename
            raise SlotsError(f"rename domain {dom.name()} to {name}: {exc}") from None

    @staticmethod
    def _set_labels(dom, labels: t.Mapping[str, str]) -> None:
        """Rewrite the rum metadata's labels of an inactive domain (the rest of the metadata kept)."""
        metadata = dict(domain.read_metadata(lv.inactive_xml(dom)) or {})
        metadata["labels"] = {name: str(value) for name, value in labels.items()}
        dom.setMetadata(lv.libvirt.VIR_DOMAIN_METADATA_ELEMENT, domain.metadata_element(metadata),
                        domain.RUM_PREFIX, domain.RUM_NS, lv.libvirt.VIR_DOMAIN_AFFECT_CONFIG)

    def _guard_guest(self, job: Job, dom, nxt: Seen) -> None:
        """The started guest's filter must see its traffic, and its seed goes once read (see rum_vm)."""
        xml = lv.inactive_xml(dom)
        if vm.own_filters(xml):
            problem = nwfilter.bridge_problem(missing_ok=False)
            if problem:
                raise SlotsError(f"slot {job.slot}: network_filter: {problem}")
        paths = nxt.meta.get("paths") or {}
        if nxt.meta.get("seed_eject") == "yes" and paths.get("seed"):
            seed_eject.register(self.storage_dir, name=job.slot, uuid=nxt.uuid, uri=self.uri, seed=paths["seed"],
                                lock=vm.Paths.for_vm(self.storage_dir, job.slot).lock)
            self._seed_watch = True

    def _clean(self, job: Job, gone: t.Sequence[Seen], dry: bool) -> None:
        """Remove these VMs (any kind) with everything they have; their runners go to ``delete``."""
        for seen in gone:
            job.changes.append(f"remove {seen.name}")
            runner = _runner_of(seen)
            if runner and runner not in job.delete:
                job.delete.append(runner)
            if dry:
                continue
            params = self.vm_params(seen.name, state="absent")
            self._timed(job, "remove", lambda p=params: self._manage(p))

    def swept(self, jobs: t.Sequence[Job]) -> list[Job]:
        """A ``sweep`` job for each other slot of this host with a generation's directory or network
        filter left (teardown)."""
        try:
            names = os.listdir(self.storage_dir)
        except FileNotFoundError:
            names = []
        have = {job.slot for job in jobs}
        slots: dict[str, str] = {}
        for name in names:
            found = contract.parse_vm_name(name, [self.name])
            if found is not None and found.kind != "slot" and found.slot.host == self.host and found.slot.name not in have:
                slots.setdefault(found.slot.name, "a generation's directory was left without its VM")
        for slot in self._filters_by_slot():
            if slot not in have:
                slots.setdefault(slot, "a generation's network filter was left without its VM")
        return [Job(slot, "sweep", reason=reason) for slot, reason in sorted(slots.items(), key=lambda kv: self._index(kv[0]))]

    def _filters_by_slot(self) -> dict[str, list[str]]:
        """The network filters libvirt holds for VMs of this pool on this host, by slot."""
        try:
            names = nwfilter.names(self.conn())
        except nwfilter.FilterError as exc:
            raise SlotsError(str(exc)) from None
        out: dict[str, list[str]] = {}
        for name in names:
            found = contract.parse_vm_name(nwfilter.vm_of(name), [self.name])
            if found is not None and found.slot.host == self.host:
                out.setdefault(found.slot.name, []).append(name)
        return out

    def _orphan_filters(self, slot: str) -> list[str]:
        """The network filters made for generations of ``slot`` that no domain of the host names.

        A filter is named after the VM it was made for (``rum-vm-<name>``, the staged name of a
        batch-made generation) and removed with it; one whose VM was deleted by hand (virsh
        undefine) or whose removal was cut short stays. Which filters the host's domains name is
        read once per call of the module: under the slot's lock no other run makes a generation of
        this slot, and what this run removed took its filter along.
        """
        mine = self._filters_by_slot().get(slot, [])
        if not mine:
            return []
        with self._filters_lock:
            if self._filters_in_use is None:
                try:
                    self._filters_in_use = nwfilter.referenced(self.conn())
                except nwfilter.FilterError as exc:
                    raise SlotsError(str(exc)) from None
            used = self._filters_in_use
        return [name for name in mine if name not in used]

    def _sweep(self, job: Job, dry: bool) -> None:
        """Once all of a slot's VMs are gone: the directories and network filters of its generations
        no VM took along.

        A generation's directory is named after it (``<slot>.<suffix>``, ``<slot>_<suffix>``), and so
        is its filter (``rum-vm-<name>``); libvirt leaves both when the VM is deleted behind the pool's
        back. Under the slot's lock no other run makes one of the slot's generations meanwhile.
        """
        try:
            names = os.listdir(self.storage_dir)
        except FileNotFoundError:
            names = []
        for name in sorted(names):
            found = contract.parse_vm_name(name, [self.name])
            folder = os.path.join(self.storage_dir, name)
            if found is None or found.kind == "slot" or found.slot.name != job.slot or not os.path.isdir(folder):
                continue
            job.changes.append(f"remove {folder} (its VM is gone)")
            if not dry:
                shutil.rmtree(folder)
        if not dry:
            self._link(job.slot, None)
        self._prune_taps(job, dry)
        for name in self._orphan_filters(job.slot):
            job.changes.append(f"remove network filter {name} (its VM is gone)")
            if not dry:
                try:
                    nwfilter.remove(self.conn(), name)
                except nwfilter.FilterError as exc:
                    raise SlotsError(f"slot {job.slot}: {exc}") from None

    def _prune_taps(self, job: Job, dry: bool) -> None:
        """Once per run: the taps of the nftables engine's ruleset that no domain names (a tap name
        does not tell its slot: a VM deleted behind the pool's back left them)."""
        with self._filters_lock:
            if self._taps_pruned:
                return
            self._taps_pruned = True
            try:
                taps = nftables.prune(self.conn(), check_mode=dry)
            except nftables.NftError as exc:  # a cleanup: the slot's own work goes on
                job.changes.append(f"could not prune the nftables ruleset: {exc}")
                return
        if taps:
            job.changes.append(f"release {', '.join(taps)} from the nftables ruleset (no VM has them)")

    def _link(self, slot: str, seen: Seen | None) -> None:
        """``<storage_dir>/<slot>``: a link to the folder of the generation the slot's VM was made as
        (``<slot>.<suffix>``), so its serial log is where the slot-by-slot path keeps it; none once the
        slot has no VM. A real folder there (the slot-by-slot path's VM) is left alone."""
        link = os.path.join(self.storage_dir, slot)
        if os.path.lexists(link) and not os.path.islink(link):
            return
        target = (seen.meta.get("paths") or {}).get("dir") if seen is not None else None
        try:
            if not target:
                if os.path.islink(link):
                    os.unlink(link)
                return
            if os.path.dirname(target) == self.storage_dir:
                target = os.path.basename(target)  # relative: the link still holds if the storage moves
            if os.path.islink(link) and os.readlink(link) == target:
                return
            temporary = os.path.join(self.storage_dir, f".{slot}.link")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            os.symlink(target, temporary)
            os.replace(temporary, link)
        except OSError as exc:
            self.log(f"slot {slot}: the link {link} to its VM's folder: {exc}")

    def _manage(self, params: t.Any) -> dict:
        """rum_vm's work on one VM, on the batch's connection."""
        return self.manager(params, connect=lambda _uri: _Borrowed(self.conn()), log=self.log, run=self.run_cmd).run()


class _Borrowed:
    """The batch's connection lent to a VMManager, which closes its connection when it is done."""

    def __init__(self, conn):
        self._conn = conn

    def __getattr__(self, name):
        return getattr(self._conn, name)

    def close(self) -> int:
        return 0


CHANGED = planner.CHANGED_OUTCOMES


def run_phase(pool: t.Mapping[str, t.Any], *, mode: str, phase: str, slot: str | None = None,
              runner_name: str | None = None, runners: t.Sequence[t.Mapping[str, t.Any]] = (),
              jobs: t.Sequence[t.Mapping[str, t.Any]] = (), credentials: t.Mapping[str, t.Any] | None = None,
              only: t.Collection[str] | None = None, take_over: t.Mapping[str, str] | None = None,
              holder: dict | None = None, lock_dir: str = LOCK_DIR, lock_timeout: float = 0,
              check_mode: bool = False, log: t.Callable[[str], None] = lambda msg: None,
              **deps: t.Any) -> dict[str, t.Any]:
    """One call of the rum_slots module: ``prepare`` (plan, lock, check, start what is staged) or ``act``."""
    if mode not in MODES:
        raise SlotsError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    host = SlotHost(pool, check_mode=check_mode, lock_dir=lock_dir, holder=holder, log=log,
                    owner=f"rum_slots {mode}", **deps)
    try:
        plan = None
        if phase == "act":
            work = [Job.from_report(job) for job in jobs]
            host.act(work, credentials or {})
        else:
            if mode in ("converge", "absent"):
                plan = host.plan(host.look(), list(runners), absent=mode == "absent")
                work = host.jobs_from_plan(plan)
                if mode == "absent":
                    work += host.swept(work)
                work = [job for job in work if only is None or job.slot in only]
            else:
                found = contract.parse_slot(slot, [host.name])
                if found is None or found.host != host.host:
                    raise SlotsError(f"slot {slot!r} is not a slot of pool {host.name} on host {host.host}")
                work = [Job(found.name, mode, runner_name, reason=f"{mode} requested")]
            host.prepare(work, take_over=take_over, lock_timeout=lock_timeout)
        out: dict[str, t.Any] = {"changed": any(job.outcome in CHANGED for job in work),
                                 "slots": [job.report() for job in work], "config": host.config}
        if plan is not None:
            out["plan"] = plan
        return out
    finally:
        host.close()
