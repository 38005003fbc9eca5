#!/bin/sh
# The rum.pool test image's stand-in for the GitHub Actions runner's config.sh: the real runner's
# unattended command line (config.sh --unattended --url URL --token TOKEN --name NAME --labels L
# --runnergroup G --work DIR --ephemeral --disableupdate --replace), registering at the fake
# GitHub and writing .runner and .credentials here for run.sh. See bin/standin_runner.py.
exec /usr/bin/python3 "$(dirname "$0")/bin/standin_runner.py" --configure "$@"
