//! The guest side of a scenario run: the scenario crate's helper library
//! (`memhp_scenario::HELPERS_SH`), configured for a memhp machine. It
//! expects `MEMHP` (this binary, reachable inside the namespace),
//! `MEMHP_SOCK` (the machine's control socket) and `MEMHP_DIR` (holding
//! `boot.log`, `bootblocks` and the resident helper's FIFOs `oh.req`,
//! `oh.resp` and `oh.out`, the last read by the runner: transcript mode).
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
         MEMHP_BOOTLOG=\"$MEMHP_DIR/boot.log\"\n\
         MEMHP_BOOTBLOCKS=\"$MEMHP_DIR/bootblocks\"\n\
         MEMHP_LOADMOD=\"$MEMHP ctl --socket $MEMHP_SOCK module-load\"\n\
         MEMHP_OH_DIR=\"$MEMHP_DIR\"\n\
         MEMHP_OH_TRANSCRIPT=1\n\
         MEMHP_KLOG_SYNC=1\n\
         {}\n\
         sleep() {{ :; }}\n",
        memhp_scenario::HELPERS_SH
    )
}
