#!/bin/sh
# The rum.pool test image's stand-in for the GitHub Actions runner's run.sh: same command lines
# (run.sh --jitconfig <encoded JIT config>, or no arguments after config.sh wrote .runner here),
# but it talks to the fake GitHub. See bin/standin_runner.py.
exec /usr/bin/python3 "$(dirname "$0")/bin/standin_runner.py" "$@"
