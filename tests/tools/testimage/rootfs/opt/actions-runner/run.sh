#!/bin/sh
# The rum.pool test image's stand-in for the GitHub Actions runner's run.sh: same command lines
# (run.sh --jitconfig <encoded JIT config>, or no arguments after config.sh or a bootstrap wrote
# the settings files here), but it talks to the fake GitHub. See bin/standin_runner.py.
#
# As the real run.sh and its run-helper do: the listener (bin/standin_runner.py) is started again
# while it exits 2 (a retryable error) or 3/4 (an update), after a pause; any other exit ends
# run.sh with status 0 ("Exiting runner..."), a terminated error (1) included. A root user
# without RUNNER_ALLOW_RUNASROOT is refused before the listener starts, and run.sh still exits 0.
dir=$(cd "$(dirname "$0")" && pwd)
listener=${RUM_STANDIN_LISTENER:-$dir/bin/standin_runner.py}
pause=${RUM_STANDIN_RESTART_SECONDS:-5}
while :; do
    if [ "$(id -u)" -eq 0 ] && [ -z "$RUNNER_ALLOW_RUNASROOT" ]; then
        echo "Must not run interactively with sudo"
        code=1
    else
        /usr/bin/python3 "$listener" "$@"
        code=$?
    fi
    case $code in
        0) echo "Runner listener exit with 0 return code, stop the service, no retry needed." ;;
        1) echo "Runner listener exit with terminated error, stop the service, no retry needed." ;;
        2) echo "Runner listener exit with retryable error, re-launch runner in $pause seconds." ;;
        3|4) echo "Runner listener exit because of updating, re-launch runner after successful update" ;;
        5) echo "Runner listener exit with Session Conflict error, stop the service, no retry needed." ;;
        *) echo "Exiting with unknown error code: $code" ;;
    esac
    case $code in
        2|3|4)
            echo "Restarting runner..."
            sleep "$pause"
            ;;
        *)
            echo "Exiting runner..."
            exit 0
            ;;
    esac
done
