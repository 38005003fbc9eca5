# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""gh_runner_info by name against a server that does not filter by name (as GitHub Enterprise
Server releases before the ``name`` parameter do): the task still returns only that runner."""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from ansible_collections.rum.pool.plugins.module_utils import _github as gh
from ansible_collections.rum.pool.plugins.module_utils import _github_runners as ghr
from ansible_collections.rum.pool.plugins.module_utils import _github_tasks as tasks
from tests.unit.plugins.module_utils.test_github_tasks import ORG, Transport, as_dict, model, runner  # noqa: F401  pylint: disable=unused-import


class IgnoresName(Transport):
    """The fake GitHub, but the runner list's ``name`` parameter is dropped before it arrives."""

    def __call__(self, method, url, headers, body, timeout):
        parts = urlsplit(url)
        query = {key: value for key, value in parse_qs(parts.query).items() if key != "name"}
        self.asked = parse_qs(parts.query).get("name")
        url = urlunsplit(parts._replace(query=urlencode(query, doseq=True)))
        return super().__call__(method, url, headers, body, timeout)


def test_info_by_name_filters_what_the_server_returns(model):  # pylint: disable=redefined-outer-name
    runner(model, "ci-1")
    two = runner(model, "ci-2", status="online")
    runner(model, "ci-22")
    transport = IgnoresName(model)
    client = gh.GitHubClient("https://api.github.com", auth=gh.TokenAuth("ghp_tasks"), transport=transport,
                             policy=gh.RetryPolicy(max_retries=0, max_wait=0))
    api = ghr.RunnerAPI(client, gh.Scope("organization", "acme"))
    result = tasks.info_task(api, {"name": "ci-2"})
    assert transport.asked == ["ci-2"]
    assert len(transport.calls[-1][2].get("name", [])) == 0  # the server saw no name
    assert result == {"changed": False, "scope": ORG, "runners": [as_dict(two, "ci-2", status="online")]}
