# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Self-hosted runners of one scope: tokens, JIT configs, listing, deleting, orphan pruning.

Internal to the rum.pool collection: not a public API. ``RunnerAPI`` wraps a ``GitHubClient`` for
one scope; ``select_runners`` and ``plan_prune`` are pure functions over runner lists, so the
decisions (which runner to delete, which to leave alone) are unit-testable without GitHub.

Asking GitHub for a JIT config creates a runner record. When that call may have been done
without its answer reaching us, it is not simply sent again (GitHub would answer 409, and the
record it made would stay behind, offline, for two weeks): ``create_jit_runner`` looks the name
up, removes a record GitHub made for the lost answer (its JIT config exists nowhere else, so it
cannot be used), and asks again, and says so. A token is safe to ask for twice; a delete that is
repeated and finds nothing was done by its first attempt.
"""

from __future__ import annotations

import typing as t

from ansible_collections.rum.pool.plugins.module_utils._github import (
    GitHubAmbiguous,
    GitHubClient,
    GitHubConflict,
    GitHubError,
    GitHubNotFound,
    Scope,
)

DEFAULT_RUNNER_GROUP_ID = 1
DEFAULT_RUNNER_GROUP_NAME = "Default"
MAX_LABELS = 100
STATUSES = ("online", "offline")


class RunnerError(GitHubError):
    """A runner operation cannot be done as asked (busy runner, unknown group, bad labels)."""


class Runner:
    """One self-hosted runner as GitHub lists it, with labels reduced to their names."""

    FIELDS = ("id", "name", "os", "status", "busy", "ephemeral", "labels", "runner_group_id")

    def __init__(self, id: int, name: str, os: str = "unknown", status: str = "offline",  # pylint: disable=redefined-builtin
                 busy: bool = False, ephemeral: bool | None = None, labels: t.Sequence[str] = (),
                 runner_group_id: int | None = None):
        self.id = int(id)
        self.name = name
        self.os = os
        self.status = status
        self.busy = bool(busy)
        self.ephemeral = ephemeral
        self.labels = list(labels)
        self.runner_group_id = runner_group_id

    @classmethod
    def from_api(cls, data: t.Mapping[str, t.Any]) -> Runner:
        labels = []
        for label in data.get("labels") or []:
            labels.append(label.get("name") if isinstance(label, dict) else str(label))
        return cls(id=data["id"], name=data.get("name", ""), os=data.get("os", "unknown"),
                   status=data.get("status", "offline"), busy=data.get("busy", False),
                   ephemeral=data.get("ephemeral"), labels=[x for x in labels if x],
                   runner_group_id=data.get("runner_group_id"))

    def as_dict(self) -> dict[str, t.Any]:
        return {name: getattr(self, name) for name in self.FIELDS}

    @property
    def idle_offline(self) -> bool:
        return self.status == "offline" and not self.busy

    def describe(self) -> str:
        state = self.status + (", busy" if self.busy else "")
        return f"runner '{self.name}' (id {self.id}, {state})"

    def __repr__(self) -> str:
        return f"Runner({self.id}, {self.name!r}, {self.status!r}, busy={self.busy})"


class RunnerAPI:
    """The runner endpoints of one scope (repository, organization or enterprise)."""

    def __init__(self, client: GitHubClient, scope: Scope):
        self.client = client
        self.scope = scope

    def _post(self, suffix: str, what: str, body: t.Any = None, repeatable: bool = False) -> t.Any:
        resp = self.client.request("POST", f"{self.scope.path}/actions/runners/{suffix}", body=body,
                                   expected=(201,), what=what, scope=self.scope, repeatable=repeatable)
        return resp.json() or {}

    def registration_token(self) -> dict[str, t.Any]:
        # A second token is harmless (each expires on its own): safe to ask again.
        data = self._post("registration-token", "create a runner registration token", repeatable=True)
        return {"token": data.get("token"), "expires_at": data.get("expires_at")}

    def remove_token(self) -> dict[str, t.Any]:
        data = self._post("remove-token", "create a runner remove token", repeatable=True)
        return {"token": data.get("token"), "expires_at": data.get("expires_at")}

    def generate_jit_config(self, name: str, labels: t.Sequence[str], runner_group_id: int,
                            work_folder: str | None = None) -> tuple[Runner, str]:
        body: dict[str, t.Any] = {"name": name, "runner_group_id": int(runner_group_id),
                                  "labels": list(labels)}
        if work_folder:
            body["work_folder"] = work_folder
        data = self._post("generate-jitconfig", f"create a JIT runner config for '{name}'", body)
        if not data.get("encoded_jit_config") or not isinstance(data.get("runner"), dict):
            raise RunnerError(f"{self.scope.describe()}: GitHub's JIT answer for '{name}' lacks "
                              "encoded_jit_config or runner")
        return Runner.from_api(data["runner"]), data["encoded_jit_config"]

    def list_runners(self, name: str | None = None) -> list[Runner]:
        params = {"name": name} if name else None
        items = self.client.paginate(f"{self.scope.path}/actions/runners", "runners", params=params,
                                     what="list self-hosted runners", scope=self.scope)
        return [Runner.from_api(item) for item in items]

    def find_runner(self, name: str) -> Runner | None:
        """The runner with exactly this name, or None (GitHub's ``name`` filter, then exact match)."""
        matches = [r for r in self.list_runners(name=name) if r.name == name]
        return matches[0] if matches else None

    def get_runner(self, runner_id: int) -> Runner | None:
        resp = self.client.request("GET", f"{self.scope.path}/actions/runners/{int(runner_id)}",
                                   what=f"get runner {runner_id}", scope=self.scope, allow=(404,))
        if resp.status == 404:
            return None
        return Runner.from_api(resp.json() or {})

    def delete_runner(self, runner_id: int) -> bool:
        """Delete a runner record; False if it was already gone (404).

        A 404 to a repeat of a delete whose first answer was lost means the first one did it.
        """
        resp = self.client.request("DELETE", f"{self.scope.path}/actions/runners/{int(runner_id)}",
                                   expected=(204,), allow=(404,), what=f"delete runner {runner_id}",
                                   scope=self.scope)
        return resp.status == 204 or resp.after_ambiguous

    def runner_groups(self) -> list[dict[str, t.Any]]:
        if self.scope.kind == "repository":
            return [{"id": DEFAULT_RUNNER_GROUP_ID, "name": DEFAULT_RUNNER_GROUP_NAME, "default": True}]
        items = self.client.paginate(f"{self.scope.path}/actions/runner-groups", "runner_groups",
                                     what="list runner groups", scope=self.scope)
        return [{"id": int(g["id"]), "name": g.get("name"), "default": bool(g.get("default"))} for g in items]

    def resolve_runner_group(self, name: str) -> int:
        """A runner group's id from its name (GitHub's own names are case-insensitive)."""
        groups = self.runner_groups()
        for group in groups:
            if group["name"] == name:
                return group["id"]
        folded = [g for g in groups if str(g["name"]).lower() == name.lower()]
        if len(folded) == 1:
            return folded[0]["id"]
        known = ", ".join(sorted(str(g["name"]) for g in groups)) or "none"
        raise RunnerError(f"{self.scope.describe()}: no runner group named '{name}' (known: {known})")


def validate_labels(labels: t.Sequence[str]) -> list[str]:
    """JIT labels: 1 to 100 non-empty strings, duplicates dropped in order."""
    seen: list[str] = []
    for label in labels:
        text = str(label).strip()
        if not text:
            raise RunnerError("runner labels must not be empty strings")
        if text not in seen:
            seen.append(text)
    if not seen:
        raise RunnerError("a JIT runner needs at least one label (GitHub adds none for JIT runners: "
                          "include self-hosted and the OS/arch labels your workflows use)")
    if len(seen) > MAX_LABELS:
        raise RunnerError(f"a runner can have at most {MAX_LABELS} labels, got {len(seen)}")
    return seen


class JitRunner:
    """What ``create_jit_runner`` made: the runner, its JIT config, the runner it replaced (if
    any), and ``recovery``, a sentence when a lost answer had to be dealt with."""

    def __init__(self, runner: Runner, config: str, replaced: Runner | None = None,
                 recovery: str | None = None):
        self.runner = runner
        self.config = config
        self.replaced = replaced
        self.recovery = recovery


def _clear_lost_runner(api: RunnerAPI, name: str, lost: GitHubAmbiguous) -> Runner | None:
    """After a JIT request whose answer was lost: remove the record GitHub made for it, if any.

    Returns the runner removed (None: GitHub had made none). A live runner of that name is not
    ours to remove: that is a conflict.
    """
    try:
        found = api.find_runner(name)
    except GitHubError as exc:
        raise GitHubAmbiguous(f"{lost.message}; looking for a runner named '{name}' it may have "
                              f"created failed too ({exc.message}): check the scope's runners "
                              "before trying again", lost.status) from None
    if found is None:
        return None
    if not found.idle_offline:
        raise GitHubConflict(f"{api.scope.describe()}: {found.describe()} exists after a JIT request "
                             "for it got no answer, and it is not offline and idle; not removing it", 409)
    api.delete_runner(found.id)
    return found


def create_jit_runner(api: RunnerAPI, name: str, labels: t.Sequence[str], runner_group_id: int,
                      work_folder: str | None = None, on_conflict: str = "fail") -> JitRunner:
    """Generate a JIT config; on 409 fail clearly, or replace a stale (offline, idle) runner.

    A request whose answer was lost (``GitHubAmbiguous``) is dealt with: a runner GitHub made
    for it is removed and the request made again, once; a second lost answer removes what it
    made too and fails, so no orphan is ever left.
    """
    try:
        runner, config = api.generate_jit_config(name, labels, runner_group_id, work_folder)
        return JitRunner(runner, config)
    except GitHubAmbiguous as lost:
        removed = _clear_lost_runner(api, name, lost)
        try:
            runner, config = api.generate_jit_config(name, labels, runner_group_id, work_folder)
        except GitHubAmbiguous as again:
            gone = _clear_lost_runner(api, name, again)
            raise GitHubAmbiguous(
                f"{again.message}; it happened twice in a row"
                + (f"; the runner GitHub created (id {gone.id}) was removed" if gone else
                   "; GitHub created no runner") + ", so nothing is left behind: try again later",
                again.status) from None
        if removed is not None:
            recovery = (f"the JIT request for '{name}' got no answer, but GitHub had created the runner "
                        f"(id {removed.id}); without its JIT config it is unusable, so it was removed "
                        f"and '{name}' created again (id {runner.id})")
        else:
            recovery = (f"the JIT request for '{name}' got no answer, and GitHub had created no runner; "
                        f"it was asked again (id {runner.id})")
        return JitRunner(runner, config, recovery=recovery)
    except GitHubConflict as exc:
        if on_conflict != "replace":
            raise GitHubConflict(
                f"{api.scope.describe()}: a runner named '{name}' already exists (HTTP 409 "
                f"{exc.github_message}); delete it first or use on_conflict=replace to replace it "
                "when it is offline and idle", exc.status, exc.github_message) from None
    existing = api.find_runner(name)
    if existing is not None:
        if not existing.idle_offline:
            raise GitHubConflict(
                f"{api.scope.describe()}: {existing.describe()} already exists and is not offline "
                "and idle; not replacing a live runner", 409)
        api.delete_runner(existing.id)
    made = create_jit_runner(api, name, labels, runner_group_id, work_folder, on_conflict="fail")
    made.replaced = existing
    return made


def select_runners(runners: t.Iterable[Runner], name: str | None = None, name_prefix: str | None = None,
                   labels: t.Sequence[str] = (), status: str | None = None, busy: bool | None = None
                   ) -> list[Runner]:
    """Runners matching every given filter (labels: the runner has all of them)."""
    wanted = set(labels or ())
    out = []
    for runner in runners:
        if name is not None and runner.name != name:
            continue
        if name_prefix and not runner.name.startswith(name_prefix):
            continue
        if wanted and not wanted.issubset(set(runner.labels)):
            continue
        if status and runner.status != status:
            continue
        if busy is not None and runner.busy != busy:
            continue
        out.append(runner)
    return sorted(out, key=lambda r: (r.name, r.id))


class PrunePlan:
    """Which runners an orphan prune deletes, and why each other prefixed runner is kept."""

    def __init__(self) -> None:
        self.delete: list[Runner] = []
        self.kept: list[tuple[Runner, str]] = []

    def as_dict(self) -> dict[str, t.Any]:
        return {
            "delete": [r.as_dict() for r in self.delete],
            "kept": [dict(r.as_dict(), reason=why) for r, why in self.kept],
        }


def plan_prune(runners: t.Iterable[Runner], name_prefix: str, keep: t.Iterable[str] = ()) -> PrunePlan:
    """Orphans are runners named ``name_prefix``…, offline, not busy and not in ``keep``.

    Busy runners (even offline ones: the flag lags) and online runners are never deleted; neither
    are names in ``keep`` (e.g. JIT runners whose VMs are still booting, which are offline until
    the runner connects). Runners without the prefix are not looked at at all.
    """
    if not name_prefix:
        raise RunnerError("pruning needs a non-empty runner name prefix")
    keep_names = set(keep or ())
    plan = PrunePlan()
    for runner in sorted(runners, key=lambda r: (r.name, r.id)):
        if not runner.name.startswith(name_prefix):
            continue
        if runner.busy:
            plan.kept.append((runner, "busy"))
        elif runner.status != "offline":
            plan.kept.append((runner, runner.status))
        elif runner.name in keep_names:
            plan.kept.append((runner, "in keep list"))
        else:
            plan.delete.append(runner)
    return plan


def prune_runners(api: RunnerAPI, plan: PrunePlan) -> tuple[list[Runner], list[tuple[Runner, str]]]:
    """Delete the planned runners, re-checking each just before: a runner may have woken up.

    Returns (deleted, skipped with reason). A runner that became busy/online, or that GitHub
    refuses to delete (422, busy), is skipped rather than failing the whole prune.
    """
    deleted: list[Runner] = []
    skipped: list[tuple[Runner, str]] = []
    for runner in plan.delete:
        current = api.get_runner(runner.id)
        if current is None:
            skipped.append((runner, "already gone"))
            continue
        if not current.idle_offline:
            skipped.append((current, "now " + current.status + (", busy" if current.busy else "")))
            continue
        try:
            if api.delete_runner(runner.id):
                deleted.append(current)
            else:
                skipped.append((runner, "already gone"))
        except GitHubError as exc:
            if exc.status != 422:
                raise
            skipped.append((current, f"GitHub refused: {exc.github_message}"))
    return deleted, skipped


def delete_runner(api: RunnerAPI, name: str | None = None, runner_id: int | None = None,
                  check_mode: bool = False) -> Runner | None:
    """Delete one runner by name or id (idempotent); return the runner that was (or would be) deleted.

    A busy runner is refused with a clear error (GitHub would answer 422).
    """
    if runner_id is not None:
        runner = api.get_runner(runner_id)
        if runner is not None and name is not None and runner.name != name:
            raise RunnerError(f"{api.scope.describe()}: runner id {runner_id} is named '{runner.name}', "
                              f"not '{name}'")
    elif name:
        runner = api.find_runner(name)
    else:
        raise RunnerError("a runner name or id is needed")
    if runner is None:
        return None
    if runner.busy:
        raise RunnerError(f"{api.scope.describe()}: {runner.describe()} is running a job; not deleting it")
    if not check_mode:
        try:
            if not api.delete_runner(runner.id):
                return None
        except GitHubNotFound:
            return None
    return runner
