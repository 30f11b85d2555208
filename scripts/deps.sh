#!/usr/bin/env bash
# deps.sh - install the Debian 12 packages Ringchat needs to build, test and
# run, if any are missing. A second run costs one dpkg-query and nothing else.
#
# Root is needed only when something is missing (apt-get install); as a normal
# user the script uses sudo for that step.
#
# The MariaDB and Redis server packages start their own system services from
# their post-install scripts. Ringchat never uses those (scripts/services.sh
# runs private instances under var/), so while we install, a temporary
# policy-rc.d tells invoke-rc.d not to start anything.
set -euo pipefail

PACKAGES=(
	build-essential pkg-config meson ninja-build
	liburing-dev libhiredis-dev libmariadb-dev libcjson-dev libcmocka-dev libcrypt-dev
	# libcrypto: HMAC of the node link, SHA-256 of session tokens
	libssl-dev
	mariadb-server mariadb-client redis-server redis-tools
	# flock (services.sh serialises start/stop with it) and python3 (meson
	# itself, and test.sh reads meson's test log with it).
	util-linux python3
	# only for the optional scripts/valgrind.sh
	valgrind
)

# One dpkg-query for all of them; a package dpkg has never heard of is simply
# absent from its output.
declare -A installed=()
while read -r pkg status; do
	if [[ "$status" == installed ]]; then
		installed[${pkg%%:*}]=1
	fi
done < <(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${PACKAGES[@]}" 2>/dev/null || true)
missing=()
for pkg in "${PACKAGES[@]}"; do
	if [[ -z "${installed[$pkg]:-}" ]]; then
		missing+=("$pkg")
	fi
done

if ((${#missing[@]} == 0)); then
	exit 0
fi

echo "deps: installing ${missing[*]}"

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
	if ! command -v sudo >/dev/null 2>&1; then
		echo "deps: need root (or sudo) to install: ${missing[*]}" >&2
		exit 1
	fi
	SUDO=(sudo)
fi

# Keep the system's MariaDB/Redis services from starting (exit code 101 means
# "action forbidden" to invoke-rc.d). Only when no policy is in place already,
# and removed again however this script ends.
POLICY=/usr/sbin/policy-rc.d
policy_added=0
remove_policy() {
	if ((policy_added)); then
		"${SUDO[@]}" rm -f "$POLICY"
	fi
}
trap remove_policy EXIT
if [[ ! -e "$POLICY" ]]; then
	printf '#!/bin/sh\n# temporary, from ringchat scripts/deps.sh\nexit 101\n' |
		"${SUDO[@]}" tee "$POLICY" >/dev/null
	"${SUDO[@]}" chmod 755 "$POLICY"
	policy_added=1
fi

export DEBIAN_FRONTEND=noninteractive
APT_OPTS=(-q -y -o Dpkg::Use-Pty=0 -o Dpkg::Options::=--force-confdef
	-o Dpkg::Options::=--force-confold)

# The package lists may be absent (fresh container) or stale; refresh them
# only now that an install is actually needed.
"${SUDO[@]}" apt-get "${APT_OPTS[@]}" update </dev/null >/dev/null
"${SUDO[@]}" apt-get "${APT_OPTS[@]}" install --no-install-recommends "${missing[@]}" \
	</dev/null >/dev/null

echo "deps: done"
