# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The controller side of rum_slots: GitHub, and the module's two calls on the host.

Internal to the rum.pool collection: not a public API. ``Batch.run`` is what the rum_slots action
plugin does for one task:

1. list the pool's runners at GitHub (for a converge or a removal);
2. ``prepare`` on the host (see ``_slots``): plan, lock (no wait), check, start staged
   generations - a slot whose job ended is back in service here, before anything else talks to
   GitHub;
3. deregister the runners whose VMs go while they are online, and mint a runner (a JIT config, or
   one registration token) for each slot to boot or stage - ``concurrency`` GitHub calls at once -
   while the runner records prepare freed are deleted and the orphans pruned;
4. ``act`` on the host (boot, stage, remove; unlock);
5. the slots whose lock another run held are asked again in rounds, holding no lock of this batch
   (a holder that ran on this controller and is gone is taken over at once, as rum_lock does),
   until ``lock_timeout``; each answer goes through 3 and 4;
6. delete the runner records the acts freed, and the runners minted for slots that failed;
7. with ``wait_online``, wait until GitHub shows the runner of each generation started online.

``call(phase, **arguments)`` runs the module (the action plugin's ``_execute_module``), ``api`` is a
``RunnerAPI``; tests pass the core's ``run_phase`` and a client of the fake GitHub.
"""

from __future__ import annotations

import concurrent.futures
import math
import time
import typing as t

from ansible_collections.rum.pool.plugins.module_utils import _github_runners as gh
from ansible_collections.rum.pool.plugins.module_utils import _lock as locks
from ansible_collections.rum.pool.plugins.module_utils import _pool as planner
from ansible_collections.rum.pool.plugins.module_utils import _slot as contract
from ansible_collections.rum.pool.plugins.module_utils._github import GitHubError
from ansible_collections.rum.pool.plugins.module_utils._github_tasks import _group_id

SECRETS = ("jit_config", "token", "deregistered")  # what act's no_log credentials carry
ROUND = 15  # seconds one call waits for held locks before the holders are looked at again
ONLINE_POLL = 10  # seconds between two looks at the runners while waiting for them online


class BatchError(Exception):
    """The batch cannot start (bad settings); what happened to each slot is in its result."""


def owns(pool: t.Mapping[str, t.Any], slot: t.Any) -> bool:
    """Whether ``slot`` is one of this host's wanted slots of ``pool`` (a request may be any host's)."""
    found = contract.parse_slot(slot, [pool["name"]])
    return found is not None and found.host == pool["host"] and found.index <= int(pool.get("size") or 0)


class Batch:
    def __init__(self, pool: t.Mapping[str, t.Any], *, call: t.Callable[..., dict], api: t.Any,
                 holder: dict | None = None, check_mode: bool = False, clock: t.Callable[[], float] = time.monotonic,
                 alive: t.Callable[[t.Any], bool | None] = lambda holder: None,
                 warn: t.Callable[[str], None] = lambda msg: None, sleep: t.Callable[[float], None] = time.sleep):
        missing = [key for key in ("name", "host", "backend", "github") if key not in pool]
        if missing:
            raise BatchError("rum_slots: pool must be the pool's settings, lookup('rum.pool.pool_settings') "
                             f"(it lacks {', '.join(missing)})")
        self.pool = {key: value for key, value in pool.items() if key != "github"}  # credentials stay here
        self.call = call
        self.api = api
        self.holder = holder
        self.check_mode = check_mode
        self.clock = clock
        self.alive = alive  # holder -> False when its process is known gone (rum_lock's holder_alive)
        self.warn = warn
        self.sleep = sleep
        self.concurrency = max(1, int(pool.get("concurrency") or 1))
        self.minted: dict[str, dict] = {}  # slot -> {name, id} of the runner minted for it
        self.deleted: list[str] = []
        self.problems: list[str] = []
        self.timings: dict[str, float] = {}

    # -- one task ---------------------------------------------------------------------------------
    def run(self, mode: str, slot: str | None = None, runner_name: str | None = None) -> dict[str, t.Any]:
        if mode not in planner.BATCH_MODES:
            raise BatchError(f"rum_slots: mode must be one of {', '.join(planner.BATCH_MODES)}, got {mode!r}")
        if mode in ("recreate", "stage"):
            if not contract.is_slot_name(slot):
                raise BatchError(f"rum_slots: mode={mode} needs slot=<pool>-<host>-<index>, got {slot!r}")
            if not owns(self.pool, slot):
                return {"changed": False, "owned": False, "slots": [],
                        "msg": f"slot {slot} is not a slot of this host ({self.pool['host']})"}
        runners: list[gh.Runner] = []
        if mode in ("converge", "absent"):
            prefix = contract.slot_prefix(self.pool["name"], self.pool["host"])
            runners = self._timed("github_list", lambda: [r for r in self.api.list_runners() if r.name.startswith(prefix)])
        args = {"pool": self.pool, "mode": mode, "slot": slot, "runner_name": runner_name,
                "runners": [r.as_dict() for r in runners], "holder": self.holder}
        lock_timeout = int(self.pool.get("lock_timeout") or 0)
        # no wait in the first call: a lock held by a dead run is judged here and taken over at once
        # (as rum_lock does), and what could be locked is done before any wait for the others
        first = self._timed("prepare", lambda: self.call("prepare", lock_timeout=0, **args))
        plan = first.get("plan")
        jobs = {job["slot"]: job for job in first["slots"]}
        with concurrent.futures.ThreadPoolExecutor(max_workers=self.concurrency) as github:
            background: list[concurrent.futures.Future] = []
            if not self.check_mode and plan and plan.get("orphans"):
                background.append(github.submit(self._prune, plan["orphans"], runners))
            self._finish(github, jobs, list(jobs.values()), args, background)
            if not self.check_mode:
                # the slots other runs held: waited for holding no lock of this batch, so two
                # batches at once never wait for each other crosswise
                for answered in self._rounds(jobs, args, lock_timeout):
                    self._finish(github, jobs, answered, args, background)
            for future in background:
                future.result()
        if self.pool.get("wait_online") and not self.check_mode:
            self._timed("github_online", lambda: self._wait_online(jobs))
        return self._result(mode, jobs, plan)

    def _finish(self, github: concurrent.futures.Executor, jobs: dict[str, dict], prepared: t.Sequence[dict],
                args: dict[str, t.Any], background: list) -> None:
        """Mint for and act on the prepared slots that need it; GitHub's cleanup goes on meanwhile."""
        if self.check_mode:
            return
        background += [github.submit(self._delete, job) for job in prepared if not job.get("step")]
        need = [job for job in prepared if job.get("step")]
        if not need:
            return
        made = self._timed("github_mint", lambda: self._credentials(github, need))
        # only secrets go in the module's no_log credentials (Ansible masks each of their values in
        # all its output, a runner id "2" too); the new runners' ids and URL go with their jobs
        need = [dict(job, runner_id=made.get(job["slot"], {}).get("runner_id"),
                     runner_url=made.get(job["slot"], {}).get("url")) for job in need]
        credentials = {slot: {key: value for key, value in given.items() if key in SECRETS}
                       for slot, given in made.items()}
        second = self._timed("act", lambda: self.call("act", jobs=need, credentials=credentials,
                                                      **{k: v for k, v in args.items() if k != "runners"}))
        for job in second["slots"]:
            jobs[job["slot"]] = job
        background += [github.submit(self._delete, jobs[job["slot"]]) for job in need]

    def _timed(self, what: str, work: t.Callable[[], t.Any]) -> t.Any:
        start = self.clock()
        try:
            return work()
        finally:
            self.timings[what] = round(self.timings.get(what, 0.0) + self.clock() - start, 3)

    # -- locks held by other runs -------------------------------------------------------------------
    def _rounds(self, jobs: dict[str, dict], args: dict[str, t.Any],
                lock_timeout: int) -> t.Iterator[list[dict]]:
        """Ask again for the slots whose lock was held, until ``lock_timeout``; yield each answer."""
        deadline = self.clock() + lock_timeout
        tried: set[str] = set()
        while True:
            held = [job for job in jobs.values() if job.get("held_by")]
            if not held:
                return
            take = {}
            for job in held:
                lock_id = job["held_by"].get("lock_id") or ""
                if lock_id and lock_id not in tried and self.alive(job["held_by"].get("holder")) is False:
                    take[job["slot"]] = lock_id
                    tried.add(lock_id)
            remaining = deadline - self.clock()
            if remaining <= 0 and not take:
                return
            again = self._timed("prepare", lambda: self.call(
                "prepare", only=[job["slot"] for job in held], take_over=take,
                lock_timeout=min(ROUND, max(0, math.ceil(remaining))), **args))
            answered = {job["slot"]: job for job in again["slots"]}
            for job in held:
                jobs[job["slot"]] = answered.get(job["slot"]) or dict(
                    job, held_by=None, outcome="skipped", reason="nothing to do any more")
                for change in jobs[job["slot"]].get("changes") or ():
                    if change.startswith("took over the lock"):
                        self.warn(f"rum_slots: slot {job['slot']}: {change}")
            yield [jobs[job["slot"]] for job in held if not jobs[job["slot"]].get("held_by")]

    # -- GitHub -----------------------------------------------------------------------------------
    def _credentials(self, github: concurrent.futures.Executor, need: t.Sequence[dict]) -> dict[str, t.Any]:
        """Each slot's runner: a JIT config (or the batch's registration token); a deregistration first."""
        out: dict[str, t.Any] = {}
        minting = [job for job in need if job["step"] in ("boot", "stage")]
        for job in need:
            if job["step"] == "remove":
                out[job["slot"]] = {"deregistered": self._deregister(job)}
        if not minting:
            return out
        try:
            if self.pool.get("registration") == "token":
                token = self.api.registration_token()
                url = self.api.scope.web_url(self.api.client.api_url)
                return dict(out, **{job["slot"]: {"token": token["token"], "url": url} for job in minting})
            labels = gh.validate_labels(self.pool.get("labels") or [])
            group = _group_id(self.api, self.pool)
        except GitHubError as exc:
            self.problems.append(f"GitHub: {exc.message}")
            return out
        for job, made in zip(minting, github.map(lambda job: self._mint(job, labels, group), minting)):
            if made is not None:
                out[job["slot"]] = made
        return out

    def _mint(self, job: dict, labels: list[str], group: int) -> dict | None:
        try:
            made = gh.create_jit_runner(self.api, job["new_runner"], labels, group, on_conflict="replace")
        except GitHubError as exc:
            self.problems.append(f"slot {job['slot']}: a JIT runner {job['new_runner']}: {exc.message}")
            return None
        if made.recovery:
            self.warn(f"rum_slots: slot {job['slot']}: {made.recovery}")
        self.minted[job["slot"]] = {"name": made.runner.name, "id": made.runner.id}
        return {"jit_config": made.config, "runner_id": made.runner.id}

    def _deregister(self, job: dict) -> bool:
        runner = job.get("deregister") or {}
        try:
            gh.delete_runner(self.api, name=runner.get("name"), runner_id=runner.get("id"))
        except GitHubError as exc:
            self.warn(f"rum_slots: slot {job['slot']}: its runner was not deregistered, its VM stays: {exc.message}")
            return False
        return True

    def _delete(self, job: dict) -> None:
        """The runner records the slot's work freed; a failed slot's new runner too."""
        gone = list(job.get("delete") or [])
        if job.get("outcome") == "failed" and job["slot"] in self.minted:
            gone.append(self.minted[job["slot"]])
        for runner in gone:
            try:
                if gh.delete_runner(self.api, name=runner.get("name"), runner_id=runner.get("id")) is not None:
                    self.deleted.append(runner.get("name") or str(runner.get("id")))
            except GitHubError as exc:
                self.warn(f"rum_slots: slot {job['slot']}: runner {runner.get('name')} not deregistered: {exc.message}")

    def _prune(self, orphans: t.Sequence[dict], runners: t.Sequence[gh.Runner]) -> None:
        names = {orphan["name"] for orphan in orphans}
        prune = gh.PrunePlan()
        prune.delete = [runner for runner in runners if runner.name in names]
        try:
            deleted, _skipped = gh.prune_runners(self.api, prune)
        except GitHubError as exc:
            self.warn(f"rum_slots: orphan runners not pruned: {exc.message}")
            return
        self.deleted.extend(runner.name for runner in deleted)

    def _wait_online(self, jobs: t.Mapping[str, dict]) -> None:
        """Until GitHub shows online the runner of each generation this batch started, at most
        ``online_timeout`` seconds; one that is not is the slot's problem (the task fails, as the
        slot-by-slot path's wait does)."""
        waiting = {job["started"]: job["slot"] for job in jobs.values()
                   if job.get("started") and job.get("outcome") in ("created", "recreated")}
        timeout = int(self.pool.get("online_timeout") or 0)
        deadline = self.clock() + timeout
        while waiting:
            try:
                online = {runner.name for runner in self.api.list_runners() if runner.status == "online"}
            except GitHubError as exc:
                self.problems.append(f"GitHub, waiting for the new runners online: {exc.message}")
                return
            waiting = {name: slot for name, slot in waiting.items() if name not in online}
            left = deadline - self.clock()
            if not waiting or left <= 0:
                break
            self.sleep(min(ONLINE_POLL, left))
        for name, slot in sorted(waiting.items(), key=lambda item: item[1]):
            self.problems.append(f"slot {slot}: its runner {name} was not online at GitHub within {timeout} s "
                                 "(runner_pool_online_timeout)")

    # -- the result ---------------------------------------------------------------------------------
    def _result(self, mode: str, jobs: dict[str, dict], plan: dict | None) -> dict[str, t.Any]:
        reports = [{k: v for k, v in job.items() if k not in ("token", "deregister", "delete", "step")}
                   for job in jobs.values()]
        failed = [job for job in reports if job["outcome"] == "failed"]
        held = [job for job in reports if job.get("held_by")]
        out: dict[str, t.Any] = {
            "changed": bool(self.deleted) or any(job["outcome"] in planner.CHANGED_OUTCOMES for job in reports)
            or bool(self.check_mode and plan and plan["orphans"]),
            "slots": reports, "deleted_runners": sorted(self.deleted), "timings": self.timings,
        }
        if plan is not None:
            out["plan"] = plan
            out["table"] = planner.status_table(plan) + "\n" + done_line(reports, self.check_mode)
        if mode in ("recreate", "stage") and reports:
            out["outcome"] = {"outcome": reports[0]["outcome"], "reason": reports[0]["reason"]}
        problems = [f"slot {job['slot']}: {job['reason']}" for job in failed] + self.problems
        if held and mode in ("recreate", "absent"):
            problems += [f"slot {job['slot']}: {job['reason']}" for job in held]
        elif held:
            for job in held:
                self.warn(f"rum_slots: slot {job['slot']} left alone: {job['reason']}")
        if problems:
            out.update(failed=True, msg="rum_slots: " + "; ".join(problems))
        return out


def done_line(reports: t.Sequence[dict], check_mode: bool = False) -> str:
    """``done: 2 created, 1 recreated, 1 staged; 1 started a staged generation`` under the status table."""
    counts: dict[str, int] = {}
    for job in reports:
        counts[job["outcome"]] = counts.get(job["outcome"], 0) + 1
    order = ("created", "recreated", "removed", "staged", "cleaned", "skipped", "failed")
    line = ", ".join(f"{counts[key]} {key}" for key in order if counts.get(key)) or "nothing"
    started = sum(1 for job in reports if "started its staged generation" in (job.get("reason") or ""))
    if started:
        line += f"; {started} started a staged generation"
    return ("would do: " if check_mode else "done: ") + line


def holder_alive(me: dict) -> t.Callable[[t.Any], bool | None]:
    """rum_lock's liveness check of a lock holder, judged from this controller (``me``)."""
    return lambda holder: locks.holder_alive(holder, me, locks.process_start_time)
