//! The guest side of a scenario run: the scenario crate's helper library
//! (`memhp_scenario::HELPERS_SH`), configured for a memhp machine. It
//! expects `MEMHP` (this binary, reachable inside the namespace),
//! `MEMHP_SOCK` (the machine's control socket) and `MEMHP_DIR` (holding
//! the resident helper's FIFOs `oh.req`, `oh.resp` and `oh.out`, the last
//! read by the runner: transcript mode); `boot.log` and `bootblocks` are in
//! the guest's /tmp, as the oracle guest's init leaves them.
//! `klog` in the main shell is answered by the runner in place (`@@KLOG`,
//! then `GO KLOG` on fd 3), elsewhere by `memhp ctl klog`; `dmesg` alike
//! (`@@DMESG [-c]`, `memhp ctl dmesg [-c]`), never the host's. Time is
//! virtual: `sleep` returns at once.

/// The library plus memhp's settings, ready to be sourced before the steps.
pub fn helpers() -> String {
    format!(
        "OHELPER=\"$MEMHP ohelper\"\n\
         MEMHP_KLOG_CMD='\"$MEMHP\" ctl --socket \"$MEMHP_SOCK\" klog'\n\
         MEMHP_DMESG_CMD='\"$MEMHP\" ctl --socket \"$MEMHP_SOCK\" dmesg'\n\
         MEMHP_BOOTLOG=/tmp/boot.log\n\
         MEMHP_BOOTBLOCKS=/tmp/bootblocks\n\
         MEMHP_LOADMOD=\"$MEMHP ctl --socket $MEMHP_SOCK module-load\"\n\
         MEMHP_OH_DIR=\"$MEMHP_DIR\"\n\
         MEMHP_OH_TRANSCRIPT=1\n\
         MEMHP_KLOG_SYNC=1\n\
         {}\n\
         sleep() {{ :; }}\n",
        memhp_scenario::HELPERS_SH
    )
}

/// What the guest says about itself where a program asks the kernel
/// directly (the host kernel would answer): `uname` (the emulated build
/// and the node name of `/proc/sys/kernel/hostname`), `hostname` (that
/// file), `nproc` (the run is pinned to one host CPU; the guest has `smp`),
/// `modprobe` (the guest's initramfs has no module tree: it fails as there)
/// and `rmmod` (the machine's modules, never the host's). Options these do
/// not know go to the real program.
pub fn identity(version: memhp_model::KernelVersion, smp: u32) -> String {
    format!(
        r#"uname() {{
	_mh_u=
	[ $# -eq 0 ] && _mh_u=s
	for _mh_ua in "$@"; do
		case "$_mh_ua" in
		-a|--all) _mh_u=snrvmo ;;
		-[snrvmo]*) _mh_u="$_mh_u${{_mh_ua#-}}"
			case "${{_mh_ua#-}}" in *[!snrvmo]*) command uname "$@"; return ;; esac ;;
		*) command uname "$@"; return ;;
		esac
	done
	_mh_uo=
	case "$_mh_u" in *s*) _mh_uo="$_mh_uo Linux" ;; esac
	case "$_mh_u" in *n*) _mh_uo="$_mh_uo $(cat /proc/sys/kernel/hostname)" ;; esac
	case "$_mh_u" in *r*) _mh_uo="$_mh_uo {release}" ;; esac
	case "$_mh_u" in *v*) _mh_uo="$_mh_uo {version}" ;; esac
	case "$_mh_u" in *m*) _mh_uo="$_mh_uo x86_64" ;; esac
	case "$_mh_u" in *o*) _mh_uo="$_mh_uo GNU/Linux" ;; esac
	printf '%s\n' "${{_mh_uo# }}"
}}
hostname() {{ if [ $# -eq 0 ]; then cat /proc/sys/kernel/hostname; else printf '%s' "$1" > /proc/sys/kernel/hostname; fi; }}
nproc() {{ if [ $# -eq 0 ]; then echo {smp}; else command nproc "$@"; fi; }}
modprobe() {{ echo "modprobe: can't change directory to '{release}': No such file or directory" >&2; return 1; }}
rmmod() {{
	_mh_rc=0
	for _mh_m in "$@"; do
		case "$_mh_m" in -*) continue ;; esac
		_mh_m=${{_mh_m%.ko}}
		if _mh_to_transcript; then
			# The runner unloads it and brings the mount up to date first.
			printf '%s\n' "@@RMMOD $_mh_m"
			_mh_r=1
			while read -r _mh_line <&3; do
				_mh_line=${{_mh_line%"$_MH_CR"}}
				case "$_mh_line" in "GO RMMOD "*) _mh_r=${{_mh_line#GO RMMOD }}; break ;; esac
			done
		else
			"$MEMHP" ctl --socket "$MEMHP_SOCK" module-unload "$_mh_m" >/dev/null 2>&1
			_mh_r=$?
		fi
		case "$_mh_r" in
		0) ;;
		11) echo "rmmod: can't unload module '$_mh_m': Resource temporarily unavailable" >&2; _mh_rc=1 ;;
		*) echo "rmmod: can't unload module '$_mh_m': No such file or directory" >&2; _mh_rc=1 ;;
		esac
	done
	return $_mh_rc
}}
"#,
        release = version.uname_release(),
        version = version.uname_version(),
        smp = smp.max(1),
    )
}
