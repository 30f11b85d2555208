#!/usr/bin/env bash
# run.sh - set-up command 1: from a fresh Debian 12 machine (or any later
# state) to a running node.
#
#   1. scripts/deps.sh        installs missing packages (apt-get)
#   2. meson + ninja          builds ringchatd (and the CLI) in build/
#   3. scripts/services.sh    starts the private MariaDB and Redis under var/
#   4. ringchatd              runs in the foreground with config/ringchatd.conf
#
# Arguments are passed to ringchatd (e.g. --listen 127.0.0.1:7000, --help).
# The services keep running after the node exits; stop them with
# `scripts/services.sh stop`.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
# The shipped config names var/run/*.sock relative to the repository root.
cd "$ROOT"

bash scripts/deps.sh

# Reconfigure an existing build dir too: meson.build picks files up with
# fs.is_file, which only a (re)configure re-evaluates. It costs a second and
# rebuilds nothing that has not changed.
# Meson's chatter is shown only if the setup fails.
if [[ -f build/build.ninja ]]; then
	setup_args=(--reconfigure build)
else
	rm -rf build
	setup_args=(build)
fi
if ! setup_log=$(meson setup "${setup_args[@]}" 2>&1); then
	printf '%s\n' "$setup_log"
	exit 1
fi
ninja -C build src/ringchatd src/ringchat-cli

bash scripts/services.sh start

exec build/src/ringchatd "$@"
