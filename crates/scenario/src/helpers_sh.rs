//! The scenario shell helper library, see [`HELPERS_SH`].

/// The helper functions scenario steps call (`say w wt wa r blk blocks
/// memdump nodes zones iomem params dump klog bootlog hotblocks bootblocks
/// allblocks loadmod ms host`, variables `M` and `N`), with the same output
/// formats as the oracle guest's library. Source it in a POSIX `sh`
/// (`. helpers.sh`) before the compiled guest script
/// ([`crate::Scenario::guest_script`]).
///
/// # Environment (set by the runner before sourcing)
///
/// | variable | meaning | default |
/// |---|---|---|
/// | `OHELPER` | the helper command, word-split (no spaces in its path) | `memhp ohelper` |
/// | `M` | memory block directory | `/sys/devices/system/memory` |
/// | `N` | node directory | `/sys/devices/system/node` |
/// | `MEMHP_PARAMS_DIR` | memory_hotplug module parameters (`params`) | `/sys/module/memory_hotplug/parameters` |
/// | `MEMHP_PROC` | where `zoneinfo`, `iomem`, `meminfo` are read | `/proc` |
/// | `MEMHP_KLOG_CMD` | `klog`: a command (run with `eval`) printing the kernel messages since the last call | unset |
/// | `MEMHP_KLOG` | `klog` without `MEMHP_KLOG_CMD`: a file the runner appends messages to (O_APPEND); `klog` prints it, then truncates it | unset (no messages) |
/// | `MEMHP_BOOTLOG` | `bootlog REGEX`: the boot log file to grep | unset (no lines) |
/// | `MEMHP_BOOTBLOCKS` | `bootblocks`/`hotblocks`: file with the block names present at boot, one per line | unset (no boot blocks) |
/// | `MEMHP_LOADMOD` | `loadmod NAME` runs `$MEMHP_LOADMOD NAME`, which must print the guest's `insmod FILE.ko -> rc=N[ OUTPUT]` lines | unset (error on stderr, status 1) |
///
/// # Host steps: suggested protocol
///
/// The runner compiles the N-th host step (0-based) to `host N`
/// ([`crate::Scenario::guest_script`]). `host N` prints `@@WAIT N` on
/// stdout and blocks reading lines from **file descriptor 3** until one is
/// `GO N` (carriage returns ignored); if fd 3 reaches end of file it prints
/// `ERROR: control channel closed`. So the runner:
///
/// 1. starts `sh` with stdout a pipe it reads line by line, and fd 3 the read
///    end of a second pipe (e.g. `sh -c '. helpers.sh; . script.sh' 3<&N`);
/// 2. copies every stdout line into the transcript, except `@@WAIT N`: then
///    it writes the step's text ([`crate::HostStep::text`]) into the
///    transcript, performs the action, writes its own `HOST ...` lines, and
///    sends `GO N\n` on fd 3;
/// 3. stops at end of file on stdout.
///
/// Scenario lines that call the guest helper by its path (`/bin/ohelper
/// dump ...`) need [`crate::rewrite_ohelper_calls`].
pub const HELPERS_SH: &str = include_str!("helpers.sh");
