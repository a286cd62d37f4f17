# memhp scenario helper library (POSIX sh). Same function names and output
# formats as the oracle guest's helpers; every sysfs access goes through the
# helper command in $OHELPER.
#
# Environment (set by the runner before sourcing this file):
#   OHELPER           helper command, word-split     (default: memhp ohelper)
#   MEMHP_OH_DIR      directory with FIFOs oh.req and oh.resp: run the helper
#                     as a resident process ("$OHELPER serve") instead of
#                     once per call (unset: once per call)
#   M                 memory block directory         (default: /sys/devices/system/memory)
#   N                 node directory                 (default: /sys/devices/system/node)
#   MEMHP_PARAMS_DIR  memory_hotplug parameters      (default: /sys/module/memory_hotplug/parameters)
#   MEMHP_PROC        zoneinfo/iomem/meminfo dir     (default: /proc)
#   MEMHP_KLOG_CMD    klog: command (eval'd) printing the kernel messages since
#                     the previous call
#   MEMHP_KLOG        klog without MEMHP_KLOG_CMD: file the runner appends kernel
#                     messages to; klog prints it and truncates it
#   MEMHP_DMESG_CMD   dmesg: command (eval'd, with dmesg's arguments) printing
#                     the kernel messages since the last klog or `dmesg -c`
#                     (unset: the system's dmesg)
#   MEMHP_BOOTLOG     bootlog: boot log file
#   MEMHP_BOOTBLOCKS  bootblocks/hotblocks: file listing the boot memory blocks
#   MEMHP_LOADMOD     loadmod NAME runs "$MEMHP_LOADMOD NAME" (it prints the
#                     "insmod FILE.ko -> rc=N" lines)
# Host steps: "host N" prints "@@WAIT N" and waits for a line "GO N" on fd 3.

: "${OHELPER:=memhp ohelper}"

_MH_CR=$(printf '\r')

# Is this the main shell (not a subshell or job)? /proc/self is the main
# shell's /proc entry only in the main shell (one test, no read of
# /proc/self/stat: that was a third of the time of a helper call).
_mh_main_shell() {
	[ -n "${_MH_OH_SHELL:-}" ] && [ /proc/self -ef "/proc/$_MH_OH_SHELL" ]
}

# Main shell with stdout still the runner's transcript pipe (fd 7 keeps it)?
_mh_to_transcript() {
	[ -n "${_MH_OH_OUT:-}" ] && _mh_main_shell && [ /proc/self/fd/1 -ef /proc/self/fd/7 ]
}

# _mh_oh ARGS...     the helper: through the resident helper when the runner
#                    provided its FIFOs (MEMHP_OH_DIR/oh.req, oh.resp) and
#                    this is the main shell (a subshell, e.g. a background
#                    job, would share them), as a program otherwise
_mh_oh() {
	if _mh_main_shell; then
		_mh_req=
		# Output straight into the transcript when stdout is still
		# the runner's pipe: the runner puts it where the marker
		# line is.
		if [ -n "${_MH_OH_OUT:-}" ] && [ /proc/self/fd/1 -ef /proc/self/fd/7 ]; then
			_mh_req="@transcript$_MH_US"
		fi
		for _mh_a in "$@"; do
			case "$_mh_a" in *"$_MH_NL"*) $OHELPER "$@"; return ;; esac
			_mh_req="$_mh_req$_mh_a$_MH_US"
		done
		printf '%s\n' "$_mh_req" >&8
		_mh_f=
		while IFS= read -r _mh_l <&9; do
			case "$_mh_l" in
			o*) printf '%s\n' "${_mh_l#o}" ;;
			n*) printf '%s' "${_mh_l#n}" ;;
			e*) printf '%s\n' "${_mh_l#e}" >&2 ;;
			f) _mh_f=1 ;;
			r*) [ -z "$_mh_f" ] || printf '\036@@OH\n'; return "${_mh_l#r}" ;;
			esac
		done
		return 1
	fi
	$OHELPER "$@"
}
if [ -n "${MEMHP_OH_DIR:-}" ] && [ -p "$MEMHP_OH_DIR/oh.req" ] && [ -p "$MEMHP_OH_DIR/oh.resp" ]; then
	# Not a job of this shell (a step's "wait" must not wait for it); it
	# exits once fd 8 is closed everywhere.
	_MH_OH_OUT=
	if [ -p "$MEMHP_OH_DIR/oh.out" ] && [ -n "${MEMHP_OH_TRANSCRIPT:-}" ]; then
		# The runner reads oh.out: transcript mode (see _mh_oh).
		_MH_OH_OUT="$MEMHP_OH_DIR/oh.out"
		exec 7>&1
	fi
	($OHELPER serve "$MEMHP_OH_DIR/oh.req" "$MEMHP_OH_DIR/oh.resp" $_MH_OH_OUT </dev/null >/dev/null 2>&1 7>&- &)
	exec 8>"$MEMHP_OH_DIR/oh.req" 9<"$MEMHP_OH_DIR/oh.resp"
	_MH_OH_SHELL=$$
	_MH_US=$(printf '\037')
	_MH_NL='
'
fi
: "${M:=/sys/devices/system/memory}"
: "${N:=/sys/devices/system/node}"
: "${MEMHP_PARAMS_DIR:=/sys/module/memory_hotplug/parameters}"
: "${MEMHP_PROC:=/proc}"

# say TEXT...        print the arguments as one line (no escape processing)
say() { printf '%s\n' "$*"; }

# w FILE VALUE       one write(2) of VALUE, C escapes decoded, no newline added
w() { _mh_oh write "$1" "$2"; }
# wt FILE VALUE      the same, with the write's duration
wt() { _mh_oh write -t "$1" "$2"; }
# wa SECS FILE VALUE timed write, interrupted by SIGALRM after SECS (virtual)
wa() { _mh_oh write -t -a "$1" "$2" "$3"; }
# r FILE...          exact content of each file, escaped, or its errno
r() { _mh_oh read "$@"; }
# blk NAME FILE VALUE  w $M/NAME/FILE VALUE
blk() { _mh_oh write "$M/$1/$2" "$3"; }

# one line per memory block
blocks() { printf '%s\n' "--- blocks"; _mh_oh blocks "$M"; }

# everything under $M, natural order, symlinks not followed
memdump() { printf '%s\n' "--- memdump"; _mh_oh dump "$M"; }

# node masks, then per node: memory block links, cpulist, MemTotal
nodes() {
	printf '%s\n' "--- nodes"
	_mh_oh nodes "$N"
}

# zone spans and page counts from zoneinfo ("-": not printed for the zone)
zones() {
	printf '%s\n' "--- zones"
	_mh_oh zones "$MEMHP_PROC/zoneinfo"
}

# RAM resources
iomem() { printf '%s\n' "--- iomem"; _mh_oh iomem "$MEMHP_PROC/iomem"; }

# memory_hotplug parameters and memory totals
params() {
	printf '%s\n' "--- params"
	_mh_oh dump "$MEMHP_PARAMS_DIR"
	_mh_oh meminfo-totals "$MEMHP_PROC/meminfo"
}

# all of the above
dump() { memdump; nodes; zones; iomem; params; }

# kernel messages since the previous klog
klog() {
	if [ -n "${MEMHP_KLOG_SYNC:-}" ] && _mh_to_transcript; then
		# The runner prints them in place of "@@KLOG" while we wait.
		printf '%s\n' "@@KLOG"
		_mh_wait KLOG
		return
	fi
	if [ -n "${MEMHP_KLOG_CMD:-}" ]; then
		eval "$MEMHP_KLOG_CMD"
	elif [ -n "${MEMHP_KLOG:-}" ] && [ -f "$MEMHP_KLOG" ]; then
		cat "$MEMHP_KLOG" && : > "$MEMHP_KLOG"
	fi | sed 's/^/klog: /'
}

# the kernel's message buffer, as the guest's busybox dmesg shows it: the
# messages since the last klog (its /init cleared the boot messages);
# `dmesg -c` clears them too
dmesg() {
	if [ -n "${MEMHP_KLOG_SYNC:-}" ] && _mh_to_transcript; then
		case "$*" in
		"" | -c)
			printf '%s\n' "@@DMESG $*"
			_mh_wait KLOG
			return
			;;
		esac
	fi
	if [ -n "${MEMHP_DMESG_CMD:-}" ]; then
		eval "$MEMHP_DMESG_CMD" '"$@"'
	else
		command dmesg "$@"
	fi
}

# boot log lines matching an extended regex
bootlog() {
	[ -n "${MEMHP_BOOTLOG:-}" ] && [ -r "$MEMHP_BOOTLOG" ] || return 1
	grep -E "$1" "$MEMHP_BOOTLOG" | sed 's/^/bootlog: /'
}

# the boot blocks file, when it is set, present and not empty
_mh_has_bootfile() { [ -n "${MEMHP_BOOTBLOCKS:-}" ] && [ -s "$MEMHP_BOOTBLOCKS" ]; }

# memory block names, numerically sorted: all / hot-added / present at boot
allblocks() { _mh_oh allblocks "$M"; }
hotblocks() {
	if _mh_has_bootfile; then
		_mh_oh hotblocks "$M" "$MEMHP_BOOTBLOCKS"
	else
		_mh_oh hotblocks "$M"
	fi
}
bootblocks() {
	if _mh_has_bootfile; then
		_mh_oh bootblocks "$MEMHP_BOOTBLOCKS"
	fi
}

# wait for the line "GO TOKEN" on fd 3 (a trailing CR ignored); 1 when the
# channel closes first
_mh_wait() {
	while read -r _mh_line <&3; do
		[ "${_mh_line%"$_MH_CR"}" = "GO $1" ] && return 0
	done
	printf '%s\n' "ERROR: control channel closed"
	return 1
}

# host step N: hand control to the runner and wait for "GO N" on fd 3
host() {
	printf '%s\n' "@@WAIT $1"
	_mh_wait "$1"
}

# load a module (and its dependencies) through the runner
loadmod() {
	if [ -z "${MEMHP_LOADMOD:-}" ]; then
		printf '%s\n' "loadmod: MEMHP_LOADMOD is not set" >&2
		return 1
	fi
	$MEMHP_LOADMOD "$1"
}

# CLOCK_MONOTONIC in ms
ms() { _mh_oh ms; }
