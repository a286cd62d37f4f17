//! The flow of the kernel's `mem-on-off-test.sh` (spec 02 §9), written
//! here from the spec, run against a real `memhp mount` in a private mount
//! namespace where the tree stands at the real paths: `mount -t sysfs`
//! finds /sys (now memhp's), `mount -t debugfs` finds a debugfs mount point
//! covered by memhp's `notifier-error-inject`, and `/sbin/modprobe` loads
//! and unloads memhp's injector through the control socket.

use std::process::Command;

mod common;

use common::{Machine, MEMHP};

/// The selftest's phases, as spec 02 §9.6 describes them.
const FLOW: &str = r#"
error=${1:--12}; ratio=${2:-2}; priority=${3:-0}; retval=0
SYSFS=$(mount -t sysfs | head -1 | awk '{ print $3 }')
[ -d "$SYSFS" ] || { echo "sysfs is not mounted"; exit 4; }
ls $SYSFS/devices/system/memory/memory* > /dev/null 2>&1 || { echo "memory hotplug is not supported"; exit 4; }
grep -q 1 $SYSFS/devices/system/memory/memory*/removable || { echo "no hot-pluggable memory"; exit 4; }
echo "Test scope: $ratio% hotplug memory"
hotpluggable() {
	for m in $SYSFS/devices/system/memory/memory*; do
		if grep -q 1 $m/removable && grep -q "$1" $m/state; then echo ${m##/*/memory}; fi
	done
}
st() { cat $SYSFS/devices/system/memory/memory$1/state; }
on() { echo online > $SYSFS/devices/system/memory/memory$1/state; }
off() { echo offline > $SYSFS/devices/system/memory/memory$1/state; }
on_ok() { if ! on $1 || ! st $1 | grep -q online; then echo "online_memory_expect_success $1: unexpected fail" >&2; return 1; fi; }
on_fail() { if on $1 2>/dev/null || ! st $1 | grep -q offline; then echo "online_memory_expect_fail $1: unexpected success" >&2; return 1; fi; }
off_ok() { if ! off $1 || ! st $1 | grep -q offline; then echo "offline_memory_expect_success $1: unexpected fail" >&2; return 1; fi; }
off_fail() { if off $1 2>/dev/null || ! st $1 | grep -q online; then echo "offline_memory_expect_fail $1: unexpected success" >&2; return 1; fi; }
online_all() { for m in $(hotpluggable offline); do on_ok $m || retval=1; done; }
online_all
n=$(hotpluggable online | wc -l)
target=$(echo "a=$n*$ratio; if (a%100) a/100+1 else a/100" | bc)
for m in $(hotpluggable online); do
	[ $target -gt 0 ] || break
	if off_ok $m 2>/dev/null; then target=$((target - 1)); else echo "offline $m -> Failure"; fi
done
[ $target -gt 0 ] && { echo "FAILED - unable to offline some memory blocks, device busy?"; retval=1; }
online_all
/sbin/modprobe -q -r memory-notifier-error-inject
/sbin/modprobe -q memory-notifier-error-inject priority=$priority
DEBUGFS=$(mount -t debugfs | head -1 | awk '{ print $3 }')
[ -d "$DEBUGFS" ] || { echo "skip extra tests: debugfs is not mounted"; exit $retval; }
N=$DEBUGFS/notifier-error-inject/memory
[ -d $N ] || { echo "skip extra tests: the module is not available"; exit $retval; }
echo 0 > $N/actions/MEM_GOING_OFFLINE/error
for m in $(hotpluggable online); do [ $(( $(od -An -N2 -tu2 /dev/urandom) % 100 )) -lt $ratio ] && off_ok $m 2>/dev/null; done
echo $error > $N/actions/MEM_GOING_ONLINE/error
for m in $(hotpluggable offline); do on_fail $m || retval=1; done
echo 0 > $N/actions/MEM_GOING_ONLINE/error
online_all
echo $error > $N/actions/MEM_GOING_OFFLINE/error
for m in $(hotpluggable online); do off_fail $m || retval=1; done
echo 0 > $N/actions/MEM_GOING_OFFLINE/error
/sbin/modprobe -q -r memory-notifier-error-inject
online_all
echo "retval=$retval"
exit $retval
"#;

fn run_flow(tag: &str, args: &str, hotadd: Option<&str>) -> (i32, String) {
    let m = Machine::mount(&format!("selftest-{tag}"), &[]);
    let (dir, root, sock) = (&m.dir, &m.root, &m.sock);
    let dbg = dir.join("debug");
    let shim = dir.join("sbin");
    std::fs::create_dir_all(&dbg).unwrap();
    std::fs::create_dir_all(&shim).unwrap();
    if let Some(size) = hotadd {
        m.ctl(&["hotadd", "d1", size]);
    }
    // /sbin/modprobe for the guest: memory-notifier-error-inject through the
    // control socket; anything else fails harmlessly.
    let modprobe = format!(
        "#!/bin/sh\nrm=0; name=\nfor a in \"$@\"; do case $a in -q) ;; -r) rm=1 ;; *=*) ;; *) name=$a ;; esac; done\n\
         [ \"$name\" = memory-notifier-error-inject ] || exit 1\n\
         if [ $rm = 1 ]; then v=module-unload; else v=module-load; fi\n\
         exec {MEMHP} ctl --socket {} $v $name > /dev/null 2>&1\n",
        sock.display()
    );
    std::fs::write(shim.join("modprobe"), modprobe).unwrap();
    let script = dir.join("flow.sh");
    std::fs::write(&script, FLOW).unwrap();
    let sbin = std::fs::canonicalize("/sbin").unwrap();
    let setup = format!(
        "chmod +x {s}/modprobe; mount --bind {r}/sys /sys && mount -t debugfs memhp-debugfs {d} && mount --bind {r}/sys/kernel/debug {d} && \
         mount -t overlay memhp-sbin -o lowerdir={s}:{sbin} {sbin} || exit 99; exec sh {f} {args}",
        s = shim.display(),
        r = root.display(),
        d = dbg.display(),
        sbin = sbin.display(),
        f = script.display()
    );
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", &setup])
        .output()
        .unwrap();
    drop(m);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn selftest_flow_passes_with_default_options() {
    let (rc, out) = run_flow("default", "-12 2 0", None);
    assert_eq!(rc, 0, "{out}");
    assert!(out.starts_with("Test scope: 2% hotplug memory\n"), "{out}");
    assert!(out.contains("retval=0"), "{out}");
}

#[test]
fn selftest_flow_passes_with_ten_percent_and_hot_added_memory() {
    let (rc, out) = run_flow("r10", "-16 10 5", Some("1G"));
    assert_eq!(rc, 0, "{out}");
    assert!(!out.contains("unexpected"), "{out}");
}
