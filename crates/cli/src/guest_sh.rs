//! The helper functions scenario steps call (the oracle README's table:
//! `say w wt wa r blk blocks memdump nodes zones iomem params dump klog
//! bootlog hotblocks bootblocks allblocks loadmod ms`), as a POSIX shell
//! library. It expects `MEMHP` (this binary), `MEMHP_SOCK` (the machine's
//! control socket) and `MEMHP_DIR` (holding `boot.log` and `bootblocks`).
//! Time is virtual: `sleep` returns at once.

pub const HELPERS: &str = r#"
M=/sys/devices/system/memory
N=/sys/devices/system/node
oh() { "$MEMHP" ohelper "$@"; }
say() { echo "$*"; }
w() { oh write "$1" "$2"; }
wt() { oh write -t "$1" "$2"; }
wa() { oh write -t -a "$1" "$2" "$3"; }
r() { oh read "$@"; }
blk() { oh write "$M/$1/$2" "$3"; }
blocks() { echo "--- blocks"; oh blocks; }
memdump() { echo "--- memdump"; oh dump "$M"; }
nodes() {
	echo "--- nodes"
	for f in possible online has_memory has_normal_memory has_high_memory has_cpu has_generic_initiator; do
		if [ -e "$N/$f" ]; then oh read "$N/$f"; else echo "absent $N/$f"; fi
	done
	for d in "$N"/node[0-9]*; do
		[ -d "$d" ] || continue
		n=${d##*/}
		links=$(ls "$d" | grep '^memory[0-9]' | sort -t y -k 2 -n | tr '\n' ' ')
		echo "$n memory links: $links"
		echo "$n cpulist: $(cat "$d/cpulist")"
		echo "$n $(grep MemTotal "$d/meminfo" | tr -s ' ')"
	done
}
zones() {
	echo "--- zones"
	awk '
	function show() { printf "zone node=%s %-7s start_pfn=%s spanned=%s present=%s managed=%s\n", nid, zn, sp0, spn, prs, mgd }
	$1 == "Node" { if (zn != "") show(); nid = $2; sub(",", "", nid); zn = $4; sp0 = "-"; spn = "-"; prs = "-"; mgd = "-"; next }
	$1 == "spanned" { spn = $2 }
	$1 == "present" { prs = $2 }
	$1 == "managed" { mgd = $2 }
	$1 == "start_pfn:" { sp0 = $2 }
	END { if (zn != "") show() }' /proc/zoneinfo
}
iomem() { echo "--- iomem"; grep -E 'System RAM|virtio|dimm|hotplug|Hotplug' /proc/iomem; }
params() {
	echo "--- params"
	oh dump /sys/module/memory_hotplug/parameters
	grep -E '^(MemTotal|Movable|HighTotal)' /proc/meminfo | tr -s ' '
}
dump() { memdump; nodes; zones; iomem; params; }
klog() { "$MEMHP" ctl --socket "$MEMHP_SOCK" klog | sed 's/^/klog: /'; }
bootlog() { grep -E "$1" "$MEMHP_DIR/boot.log" | sed 's/^/bootlog: /'; }
hotblocks() { ls "$M" | grep '^memory[0-9]' | grep -vxF -f "$MEMHP_DIR/bootblocks" | sort -t y -k 2 -n; }
bootblocks() { sort -t y -k 2 -n "$MEMHP_DIR/bootblocks"; }
allblocks() { ls "$M" | grep '^memory[0-9]' | sort -t y -k 2 -n; }
loadmod() { "$MEMHP" ctl --socket "$MEMHP_SOCK" module-load "$1"; }
ms() { oh ms; }
sleep() { :; }
host() {
	echo "@@WAIT $1"
	while read -r line <&3; do
		[ "$line" = "GO $1" ] && return 0
	done
	echo "ERROR: control channel closed"
}
"#;
