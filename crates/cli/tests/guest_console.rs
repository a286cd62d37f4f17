//! The scenario shell's output goes to a console like the oracle guest's
//! serial console: a terminal on stdin, stdout and stderr (so stdio line-buffers, and a tool's error
//! lines stay in order with its normal output), stdout and stderr both in
//! the transcript, the C locale.

mod common;

fn steps(name: &str, steps: &str) -> String {
    let t = common::run_scenario(name, &format!("mem: 1G,slots=4,maxmem=4G\nsteps:\n{steps}"));
    let body = t.split("=== TRANSCRIPT ===\n").nth(1).unwrap();
    // After the uname and cmdline lines, up to the END line.
    body.lines()
        .skip(3)
        .take_while(|l| !l.starts_with("=== END"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_tools_stderr_lines_stay_in_order_with_its_stdout_lines() {
    // awk's stdout would be block-buffered on a pipe and come out after
    // the error line written directly to stderr.
    let t = steps(
        "console-order",
        "awk 'BEGIN { print \"one\"; print \"two\" > \"/dev/stderr\"; print \"three\" }'\n\
         cat /nonexistent/file; echo \"rc=$?\"\n",
    );
    assert_eq!(
        t,
        "one\ntwo\nthree\ncat: can't open '/nonexistent/file': No such file or directory\nrc=1"
    );
}

#[test]
fn the_shell_sees_a_terminal_and_no_locale() {
    let t = steps(
        "console-tty",
        "[ -t 0 ] && echo stdin-tty; [ -t 1 ] && echo stdout-tty; [ -t 2 ] && echo stderr-tty\n\
         echo \"LANG=${LANG-unset} LC_ALL=${LC_ALL-unset} COLUMNS=${COLUMNS-unset} TERM=$TERM HOME=$HOME\"\n",
    );
    assert_eq!(
        t,
        "stdin-tty\nstdout-tty\nstderr-tty\nLANG=unset LC_ALL=unset COLUMNS=unset TERM=linux HOME=/"
    );
}

/// Processes of the guest inherit init's open-file limits (1024 soft,
/// 4096 hard, the kernel's `INR_OPEN_CUR`/`INR_OPEN_MAX`), not those of
/// the host's shell that started memhp.
#[test]
fn the_shell_has_the_open_file_limits_init_gets() {
    let t = steps("console-nofile", "ulimit -n; ulimit -Hn\n");
    assert_eq!(t, "1024\n4096");
}

/// `dmesg` is the guest kernel's buffer (what `klog` has not taken yet),
/// never the host's; `dmesg -c` empties it like the guest's klog does;
/// piped, it goes through `memhp ctl dmesg`.
#[test]
fn dmesg_shows_the_models_messages_since_the_last_klog() {
    let t = common::run_scenario(
        "console-dmesg",
        "mem: 1G,slots=4,maxmem=4G\ncmdline: memhp_default_state=online\nsteps:\n\
         @hotadd d1 256M node=0\ndmesg\ndmesg | grep -c Fallback\ndmesg -c\nklog\necho end\n",
    );
    let body = t.split("HOST hotadd d1: ").nth(1).unwrap();
    let lines: Vec<&str> = body.lines().skip(1).take(8).collect();
    let rebuild = [
        "Fallback order for Node 0: 0 ",
        "Built 1 zonelists, mobility grouping on.  Total pages: 245235",
        "Policy zone: Normal",
    ];
    let mut want: Vec<&str> = rebuild.to_vec();
    want.push("1");
    want.extend(rebuild);
    want.push("end");
    assert_eq!(lines, want);
}

/// busybox `cat` to a file or the console uses sendfile, which fills the
/// kernel's page cache of a FUSE file and, reading short, shrinks its size
/// to the content it saw; when the content grows (a DIMM added to
/// /proc/iomem), the next read must not be cut to the old size.
#[test]
fn a_file_read_through_sendfile_is_not_cut_when_its_content_grows() {
    let t = steps(
        "console-sendfile",
        "cat /proc/iomem > /dev/null\ncat /proc/iomem | wc -c\n@hotadd d1 256M node=0\ncat /proc/iomem | wc -c\n",
    );
    let counts: Vec<usize> = t.lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert_eq!(counts.len(), 2, "{t}");
    assert_eq!(
        counts[1],
        counts[0] + "100000000-10fffffff : System RAM\n".len(),
        "{t}"
    );
}

/// The same through /sys: `cat state` of an online block, then offline it;
/// the next `cat` must show all of "offline\n" (it lost its newline, cut
/// to the 7 bytes of "online\n").
#[test]
fn cat_of_a_state_file_after_it_grew_keeps_every_byte() {
    let t = steps(
        "console-state",
        "cat $M/memory5/state\nw $M/memory5/state offline\ncat $M/memory5/state\necho end\n",
    );
    assert_eq!(
        t,
        "online\nwrite /sys/devices/system/memory/memory5/state \"offline\" -> OK (ret=7)\noffline\nend"
    );
}
