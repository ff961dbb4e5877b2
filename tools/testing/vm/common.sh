# SPDX-License-Identifier: GPL-2.0
# Shared helpers for tools/testing/vm/*; sourced, not executed.
# shellcheck shell=bash

VM_TOOLS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VM_REPO_DIR=$(cd "$VM_TOOLS_DIR/../../.." && pwd)
VM_BUILD_DIR=${VM_BUILD_DIR:-$VM_REPO_DIR/build}

# Debian mirror used for everything that does not come from the host's own apt
# configuration (trixie, trixie-backports, the chroot).
VM_MIRROR=${VM_MIRROR:-http://deb.debian.org/debian}
VM_KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

vm_die() {
	printf '%s: %s\n' "${0##*/}" "$*" >&2
	exit 1
}

vm_log() {
	printf '%s: %s\n' "${0##*/}" "$*" >&2
}

# The separate apt configuration for trixie + trixie-backports (never the
# host's /etc/apt). Fills the array APT_TRIXIE with the -o options.
APT_TRIXIE_DIR=$VM_BUILD_DIR/apt-trixie
APT_TRIXIE=(
	-o "Dir::Etc::sourcelist=$APT_TRIXIE_DIR/sources.list"
	-o "Dir::Etc::sourceparts=$APT_TRIXIE_DIR/empty.d"
	-o "Dir::Etc::preferences=$APT_TRIXIE_DIR/preferences"
	-o "Dir::Etc::preferencesparts=$APT_TRIXIE_DIR/empty.d"
	-o "Dir::State=$APT_TRIXIE_DIR/state"
	-o "Dir::State::Lists=$APT_TRIXIE_DIR/lists"
	-o "Dir::State::status=$APT_TRIXIE_DIR/status"
	-o "Dir::Cache=$APT_TRIXIE_DIR/cache"
	-o "APT::Architecture=amd64"
	-o "APT::Architectures::=amd64"
	-o "Debug::NoLocking=1"
)

# Is the trixie key in the host keyring? bookworm's debian-archive-keyring
# (2023.3+deb12u1 and later) carries it; older ones do not.
apt_trixie_signed_by() {
	if [[ -r $VM_KEYRING ]] &&
	   gpg --no-default-keyring --keyring "$VM_KEYRING" --list-keys 2>/dev/null |
	   grep -q '(13/trixie)'; then
		printf 'signed-by=%s' "$VM_KEYRING"
	else
		vm_log "warning: $VM_KEYRING lacks the trixie key; using [trusted=yes]"
		printf 'trusted=yes'
	fi
}

# Create the trixie apt tree and refresh its lists when missing, older than
# VM_APT_MAX_AGE minutes (default one day), or when $1 = force.
APT_TRIXIE_REFRESHED=
apt_trixie_update() {
	local force=${1:-}
	mkdir -p "$APT_TRIXIE_DIR"/{lists/partial,cache/archives/partial,state,empty.d}
	[[ -e $APT_TRIXIE_DIR/status ]] || : >"$APT_TRIXIE_DIR/status"
	[[ -e $APT_TRIXIE_DIR/preferences ]] || : >"$APT_TRIXIE_DIR/preferences"
	if [[ ! -s $APT_TRIXIE_DIR/sources.list ]]; then
		local sb
		sb=$(apt_trixie_signed_by)
		printf 'deb [%s] %s %s main\n' \
			"$sb" "$VM_MIRROR" trixie \
			"$sb" "$VM_MIRROR" trixie-backports \
			>"$APT_TRIXIE_DIR/sources.list"
	fi
	local stamp=$APT_TRIXIE_DIR/lists/.updated
	if [[ $force == force || ! -e $stamp ]] ||
	   [[ -n $(find "$stamp" -mmin +"${VM_APT_MAX_AGE:-1440}" 2>/dev/null) ]]; then
		vm_log "apt-get update (trixie, trixie-backports) in $APT_TRIXIE_DIR"
		apt-get "${APT_TRIXIE[@]}" -q update >&2 ||
			vm_die "apt-get update for trixie failed"
		touch "$stamp"
		# shellcheck disable=SC2034 # (read by kernel-fetch)
		APT_TRIXIE_REFRESHED=1
	fi
}
