# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What each gh_runner* module does, as plain functions of (RunnerAPI, option values, check mode).

Internal to the rum.pool collection: not a public API. The modules only build AnsibleModule,
call ``connect`` and one of these, and exit; unit tests call these with a fake transport.
"""

from __future__ import annotations

import typing as t

from ansible_collections.rum.pool.plugins.module_utils._github import GitHubConflict
from ansible_collections.rum.pool.plugins.module_utils._github_runners import (
    DEFAULT_RUNNER_GROUP_ID,
    RunnerAPI,
    RunnerError,
    create_jit_runner,
    delete_runner,
    plan_prune,
    prune_runners,
    select_runners,
    validate_labels,
)


def _group_id(api: RunnerAPI, params: t.Mapping[str, t.Any]) -> int:
    if params.get("runner_group_id") is not None:
        return int(params["runner_group_id"])
    if params.get("runner_group"):
        return api.resolve_runner_group(params["runner_group"])
    return DEFAULT_RUNNER_GROUP_ID


def token_task(api: RunnerAPI, params: t.Mapping[str, t.Any], check_mode: bool = False) -> dict[str, t.Any]:
    """gh_runner_token: a registration/remove token, or a JIT config (which creates a runner)."""
    kind = params.get("kind") or "jit"
    result: dict[str, t.Any] = {"changed": True, "kind": kind, "scope": api.scope.describe()}
    if kind in ("registration", "remove"):
        result["runner_url"] = api.scope.web_url(api.client.api_url)
        if not check_mode:
            answer = api.registration_token() if kind == "registration" else api.remove_token()
            result.update(token=answer["token"], expires_at=answer["expires_at"])
        return result

    name = params.get("name")
    if not name:
        raise RunnerError("kind=jit needs a runner name")
    labels = validate_labels(params.get("labels") or [])
    group_id = _group_id(api, params)
    on_conflict = params.get("on_conflict") or "fail"
    wanted = {"name": name, "labels": labels, "runner_group_id": group_id}
    result["runner_group_id"] = group_id
    if check_mode:
        existing = api.find_runner(name)
        if existing is not None:
            if on_conflict != "replace":
                raise GitHubConflict(f"{api.scope.describe()}: a runner named '{name}' already exists; "
                                     "delete it first or use on_conflict=replace", 409)
            if not existing.idle_offline:
                raise GitHubConflict(f"{api.scope.describe()}: {existing.describe()} already exists and "
                                     "is not offline and idle; not replacing a live runner", 409)
            result["replaced_runner"] = existing.as_dict()
        result["diff"] = {"before": {"runner": existing.as_dict() if existing else None},
                          "after": {"runner": wanted}}
        return result
    made = create_jit_runner(api, name, labels, group_id, params.get("work_folder"), on_conflict)
    runner, replaced = made.runner, made.replaced
    result.update(runner=runner.as_dict(), runner_id=runner.id, encoded_jit_config=made.config)
    if replaced is not None:
        result["replaced_runner"] = replaced.as_dict()
    if made.recovery:
        result["recovery"] = made.recovery
    result["diff"] = {"before": {"runner": replaced.as_dict() if replaced else None},
                      "after": {"runner": runner.as_dict()}}
    return result


def runner_task(api: RunnerAPI, params: t.Mapping[str, t.Any], check_mode: bool = False) -> dict[str, t.Any]:
    """gh_runner: delete one runner (state=absent) or prune orphans by prefix (state=pruned)."""
    state = params.get("state") or "absent"
    result: dict[str, t.Any] = {"changed": False, "state": state, "scope": api.scope.describe()}
    if state == "absent":
        runner = delete_runner(api, name=params.get("name"), runner_id=params.get("runner_id"),
                               check_mode=check_mode)
        result["changed"] = runner is not None
        result["runner"] = runner.as_dict() if runner else None
        result["diff"] = {"before": {"runner": runner.name if runner else None}, "after": {"runner": None}}
        return result

    prefix = params.get("name_prefix")
    if not prefix:
        raise RunnerError("state=pruned needs name_prefix")
    runners = api.list_runners()
    plan = plan_prune(runners, prefix, params.get("keep") or ())
    if check_mode:
        deleted, skipped = plan.delete, []
    else:
        deleted, skipped = prune_runners(api, plan)
    before = sorted(r.name for r in runners if r.name.startswith(prefix))
    gone = {r.name for r in deleted}
    result.update(
        changed=bool(deleted),
        deleted=[r.as_dict() for r in deleted],
        kept=[dict(r.as_dict(), reason=why) for r, why in plan.kept + skipped],
        diff={"before": {"runners": before}, "after": {"runners": [n for n in before if n not in gone]}},
    )
    return result


def info_task(api: RunnerAPI, params: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """gh_runner_info: runners of the scope matching the filters, and optionally the runner groups."""
    name = params.get("name")
    runners = api.list_runners(name=name) if name else api.list_runners()
    chosen = select_runners(runners, name=name, name_prefix=params.get("name_prefix"),
                            labels=params.get("labels") or (), status=params.get("status"),
                            busy=params.get("busy"))
    result: dict[str, t.Any] = {"changed": False, "scope": api.scope.describe(),
                                "runners": [r.as_dict() for r in chosen]}
    if params.get("runner_groups"):
        result["runner_groups"] = api.runner_groups()
    return result
