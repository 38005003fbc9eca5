# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Mutation testing of the cores that decide (`make mutate`, and its fast subset in `make test`).

mutmut (tests/mutation/setup.cfg) needs the mutated modules importable under the names the tests
use, so the run happens in a workspace (.cache/mutate/ws): a copy of the checkout with the
collection's plugins under ansible_collections/rum/pool/ and the webhook service's package at the
top. mutmut writes its mutated copies to ws/mutants and runs, for each mutant, only the unit tests
that called the mutated function. The checkout itself is never modified.

The score of each module is killed / (mutants - equivalents); equivalent mutants (a change no test
can see) are listed with a reason in tests/mutation/equivalents.txt. The score measured before
issue 14's tests (tests/mutation/baseline.txt) is printed beside today's.

  tools/mutate.py                 every listed module (make mutate)
  tools/mutate.py --subset        the modules of tests/mutation/subset.txt, all mutants killed
  tools/mutate.py --module NAME   one module (e.g. _github, signature)
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "tests" / "mutation"
# RUM_MUTATE_WS: another workspace, so that runs of different modules can go on side by side.
WS = Path(os.environ.get("RUM_MUTATE_WS") or ROOT / ".cache" / "mutate" / "ws").resolve()
LOG = WS.with_name(WS.name + "-mutmut.log" if WS.name != "ws" else "mutmut.log")
RESULTS = ROOT / ".cache" / "mutate" / "results"
COLLECTION = Path("ansible_collections/rum/pool")
MUTMUT = Path(sys.executable).parent / "mutmut"
KILLED = {1, 3, 37}  # mutmut's exit codes for a killed mutant (test failed, pytest error, type check)
STATUS = {0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", 36: "timeout",
          -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout", None: "not checked"}


def config() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(HERE / "setup.cfg")
    return parser


def modules(parser: configparser.ConfigParser) -> list[str]:
    return [line.strip() for line in parser.get("mutmut", "only_mutate").splitlines() if line.strip()]


def short(path: str) -> str:
    """ansible_collections/rum/pool/plugins/module_utils/_github.py -> _github"""
    return Path(path).stem


def read_list(name: str) -> dict[str, str]:
    """A kept list: `key  reason` per line, # comments."""
    entries: dict[str, str] = {}
    path = HERE / name
    if not path.exists():
        return entries
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _sep, rest = line.partition(" ")
        entries[key] = rest.strip()
    return entries


def tracked_files() -> list[str]:
    if not (ROOT / ".git").exists():  # a plain copy of a checkout
        skip = {".git", ".venv", ".cache", ".collections", ".pytest_cache", "__pycache__"}
        found = []
        for top, dirs, files in os.walk(ROOT):
            dirs[:] = [name for name in dirs if name not in skip]
            found += [os.path.relpath(os.path.join(top, name), ROOT) for name in files]
        return found
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                         check=True, capture_output=True).stdout.decode()
    return [name for name in out.split("\0") if name]


def build_workspace(only: list[str], tests: list[str]) -> None:
    """A fresh copy of the checkout laid out for mutmut (see the module docstring)."""
    if WS.exists():
        shutil.rmtree(WS)
    WS.mkdir(parents=True)
    for name in tracked_files():
        source = ROOT / name
        if not source.is_file():
            continue
        if name.startswith("plugins/"):
            target = WS / COLLECTION / name
        elif name.startswith("service/rum_pool_webhook/"):
            target = WS / name[len("service/"):]
        else:
            target = WS / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    # Test data fetched by tools/fetch-test-data.sh (not tracked): read only, so linked.
    (WS / ".cache").mkdir(exist_ok=True)
    for data in ("npm",):
        if (ROOT / ".cache" / data).exists():
            (WS / ".cache" / data).symlink_to(ROOT / ".cache" / data)
    parser = config()
    parser.set("mutmut", "only_mutate", "\n" + "\n".join(only))
    parser.set("mutmut", "pytest_add_cli_args_test_selection", "\n" + "\n".join(tests))
    parser.remove_section("tests")
    with open(WS / "setup.cfg", "w", encoding="utf-8") as handle:
        parser.write(handle)
    # mutmut runs the tests in ws/mutants: the rest of the checkout is linked in there, with
    # plugins/ and service/rum_pool_webhook/ pointing at the mutated copies.
    mutants = WS / "mutants"
    mutants.mkdir()
    for entry in WS.iterdir():
        if entry.name in ("mutants", "ansible_collections", "rum_pool_webhook", "tests", "service",
                          "setup.cfg"):
            continue
        (mutants / entry.name).symlink_to(entry)
    (mutants / "plugins").symlink_to(COLLECTION / "plugins")
    (mutants / "service").mkdir()
    for entry in (WS / "service").iterdir():
        (mutants / "service" / entry.name).symlink_to(entry)
    (mutants / "service" / "rum_pool_webhook").symlink_to(Path("..") / "rum_pool_webhook")


def run_mutmut(names: list[str]) -> int:
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "MUTANT_UNDER_TEST")}
    env["PATH"] = f"{MUTMUT.parent}{os.pathsep}{env.get('PATH', '')}"
    env["ANSIBLE_CONFIG"] = str(WS / "ansible.cfg")
    jobs = os.environ.get("RUM_MUTATE_JOBS", str(os.cpu_count() or 2))
    command = [str(MUTMUT), "run", "--max-children", jobs, *names]
    if os.environ.get("RUM_MUTATE_LOCK"):  # e.g. /tmp/rum-heavy.lock, taken per module
        command = ["flock", os.environ["RUM_MUTATE_LOCK"], *command]
    with open(LOG, "w", encoding="utf-8") as log:
        code = subprocess.run(command, cwd=WS, env=env, check=False, stdout=log,
                              stderr=subprocess.STDOUT).returncode
    if code not in (0, 1):
        print(LOG.read_text(encoding="utf-8")[-6000:], file=sys.stderr)
    return code


def tests_for(parser: configparser.ConfigParser, module: str) -> list[str]:
    """The module's unit tests ([tests] in setup.cfg) that exist."""
    names = parser.get("tests", short(module), fallback="").split()
    if not names:
        raise SystemExit(f"tests/mutation/setup.cfg names no tests for {short(module)}")
    return [name for name in names if (ROOT / name).exists()]


def mutate(parser: configparser.ConfigParser, module: str) -> dict[str, int | None]:
    """One module's mutants and their exit codes (a fresh workspace, its own tests)."""
    build_workspace([module], tests_for(parser, module))
    code = run_mutmut([])
    meta = WS / "mutants" / (module + ".meta")
    if code not in (0, 1) or not meta.exists():
        raise SystemExit(f"mutmut run failed for {module} (exit {code}; {meta})")
    found = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
    diffs = diff_lines(module, [name for name, code in found.items() if code not in KILLED])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / (short(module) + ".json")).write_text(
        json.dumps({"exit_codes": found, "diffs": diffs}, indent=1, sort_keys=True), encoding="utf-8")
    return found


_DIFFS = """
import json, sys
from pathlib import Path
from mutmut.mutation.diff_apply import get_diff_for_mutant
out = {}
for name in json.loads(sys.argv[2]):
    diff = get_diff_for_mutant(name, path=Path(sys.argv[1]))
    out[name] = " | ".join(line for line in diff.splitlines()
                           if line[:1] in "+-" and not line.startswith(("+++", "---")))
print(json.dumps(out))
"""


def diff_lines(module: str, names: list[str]) -> dict[str, str]:
    """Each mutant's changed lines, as mutmut shows them (one process for all of them)."""
    if not names:
        return {}
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    shown = subprocess.run([sys.executable, "-c", _DIFFS, module, json.dumps(names)], cwd=WS,
                           env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(shown)


def report(only: list[str], threshold: float) -> bool:
    found: dict[str, dict[str, int | None]] = {}
    diffs: dict[str, str] = {}
    for module in only:
        stored = RESULTS / (short(module) + ".json")
        if not stored.exists():
            raise SystemExit(f"no mutation results for {short(module)} ({stored}): run it first")
        data = json.loads(stored.read_text(encoding="utf-8"))
        found[module] = data["exit_codes"]
        diffs.update(data["diffs"])
    equivalents = read_list("equivalents.txt")
    baseline = read_list("baseline.txt")
    known = {name for codes in found.values() for name in codes}
    ok = True
    rows = []
    survivors: list[str] = []
    for module, codes in found.items():
        mod = short(module)
        counted = {name: code for name, code in codes.items() if name not in equivalents}
        killed = sum(1 for code in counted.values() if code in KILLED)
        total = len(counted)
        score = 100.0 * killed / total if total else 100.0
        before = baseline.get(mod, "-").split(" ")[0]
        rows.append((mod, total, killed, len(codes) - total, score, before))
        survivors += [f"{name}: {STATUS.get(code, code)}" for name, code in sorted(counted.items())
                      if code not in KILLED]
        ok = ok and score >= threshold
    print(f"\n{'module':<18} {'mutants':>7} {'killed':>7} {'equiv':>6} {'score':>7} {'before':>7}")
    for mod, total, killed, equiv, score, before in rows:
        print(f"{mod:<18} {total:>7} {killed:>7} {equiv:>6} {score:>6.1f}% {before:>7}")
    if survivors:
        print(f"\n{len(survivors)} surviving mutants:")
        for line in survivors:
            print(f"  {line}   {diffs.get(line.split(':')[0], '')}")
    stale = sorted(name for name in equivalents if name not in known
                   and any(name.startswith(f"{_dotted(m)}.") for m in found))
    if stale:
        print("\nequivalents.txt names mutants that no longer exist (renumbered? check them):")
        for name in stale:
            print(f"  {name}")
        ok = False
    print(f"\nthreshold {threshold:.0f}% killed per module: {'met' if ok else 'NOT met'}")
    return ok


def _dotted(module: str) -> str:
    return module[: -len(".py")].replace("/", ".")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--subset", action="store_true", help="the fast subset (make test)")
    parser.add_argument("--module", action="append", default=[], help="a module's short name")
    parser.add_argument("--threshold", type=float, default=None)
    parser.add_argument("--report-only", action="store_true", help="report the last run again")
    args = parser.parse_args()
    only = modules(config())
    wanted = args.module or (list(read_list("subset.txt")) if args.subset else [])
    if wanted:
        unknown = set(wanted) - {short(m) for m in only}
        if unknown:
            raise SystemExit(f"not a mutated module: {', '.join(sorted(unknown))}")
        only = [m for m in only if short(m) in wanted]
    threshold = args.threshold if args.threshold is not None else (100.0 if args.subset else 85.0)
    if not args.report_only:
        parser = config()
        for module in only:
            print(f"== mutating {short(module)} with {' '.join(tests_for(parser, module))}", flush=True)
            mutate(parser, module)
    return 0 if report(only, threshold) else 1


if __name__ == "__main__":
    sys.exit(main())
