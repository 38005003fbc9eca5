#!/usr/bin/env bash
# Install the GitHub Actions runner (runs as root in the build VM). The runner is only unpacked,
# never configured: each VM gets a just-in-time config at boot (run.sh --jitconfig), so no
# GitHub credential is ever part of the image.
# Environment: RUNNER_VERSION RUNNER_SHA256 RUNNER_URL RUNNER_DIR RUNNER_USER RUNNER_SUDO.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
: "${RUNNER_VERSION:?}" "${RUNNER_SHA256:?}" "${RUNNER_URL:?}" "${RUNNER_DIR:?}" "${RUNNER_USER:?}"
RUNNER_SUDO=${RUNNER_SUDO:-true}
[[ "$RUNNER_VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "runner_version '$RUNNER_VERSION': expected e.g. 2.330.0" >&2; exit 1; }
[[ "$RUNNER_SHA256" =~ ^[0-9a-f]{64}$ ]] || { echo "runner_sha256: expected 64 lowercase hex digits" >&2; exit 1; }

if ! id "$RUNNER_USER" >/dev/null 2>&1; then
  echo ">> creating user $RUNNER_USER"
  useradd --create-home --shell /bin/bash --user-group "$RUNNER_USER"
fi
passwd --lock "$RUNNER_USER" >/dev/null
if [[ "$RUNNER_SUDO" == "true" ]]; then
  # The VM is thrown away after one job; jobs commonly need root (apt-get, setup actions).
  printf '%s ALL=(ALL) NOPASSWD:ALL\n' "$RUNNER_USER" > "/etc/sudoers.d/90-$RUNNER_USER"
  chmod 0440 "/etc/sudoers.d/90-$RUNNER_USER"
  visudo -cf "/etc/sudoers.d/90-$RUNNER_USER"
else
  rm -f "/etc/sudoers.d/90-$RUNNER_USER"
fi

echo ">> downloading actions runner $RUNNER_VERSION"
tarball=$(mktemp /tmp/actions-runner.XXXXXX.tar.gz)
trap 'rm -f "$tarball"' EXIT
curl --fail --silent --show-error --location --retry 5 --retry-delay 5 -o "$tarball" "$RUNNER_URL"
echo "$RUNNER_SHA256  $tarball" | sha256sum --check --strict --quiet || {
  echo "actions runner $RUNNER_VERSION from $RUNNER_URL: sha256 mismatch (expected $RUNNER_SHA256, got $(sha256sum "$tarball" | cut -d' ' -f1))" >&2
  exit 1
}

install -d -m 0755 -o "$RUNNER_USER" -g "$RUNNER_USER" "$RUNNER_DIR"
tar -xzf "$tarball" -C "$RUNNER_DIR"
chown -R "$RUNNER_USER:$RUNNER_USER" "$RUNNER_DIR"

echo ">> installing the runner's dependencies"
(cd "$RUNNER_DIR" && ./bin/installdependencies.sh)

# What config.sh would have done besides registering: record the login PATH and the usual tool
# variables in .path / .env, which run.sh reads. (JIT runners skip config.sh.)
runuser -l "$RUNNER_USER" -c "cd '$RUNNER_DIR' && ./env.sh" >/dev/null

# A runner binary that is started without a config must not find stale state from the build.
rm -rf "$RUNNER_DIR/_diag" "$RUNNER_DIR/_work" \
  "$RUNNER_DIR/.runner" "$RUNNER_DIR/.credentials" "$RUNNER_DIR/.credentials_rsaparams"

# Recorded for troubleshooting (the runner's own version is also in bin/Runner.Listener --version).
printf 'RUNNER_VERSION=%s\nRUNNER_SHA256=%s\nBUILT_AT=%s\n' \
  "$RUNNER_VERSION" "$RUNNER_SHA256" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" > /etc/rum-runner-image
echo ">> actions runner $RUNNER_VERSION installed in $RUNNER_DIR (owner $RUNNER_USER)"
