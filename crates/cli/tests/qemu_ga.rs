//! The real QEMU guest agent (`qemu-ga`, Debian's qemu-guest-agent) against
//! a real `memhp mount`: it hard-codes `/sys/devices/system/memory`, so it
//! runs in a private mount namespace where the memhp tree stands at `/sys`,
//! and is driven over its own unix socket with the commands a VMM's
//! `guest-get-memory-blocks` / `guest-set-memory-blocks` /
//! `guest-get-memory-block-info` send.

mod common;

use common::Machine;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A qemu-ga process listening on a unix socket; killed on drop.
struct Agent {
    child: Child,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Agent {
    fn start(m: &Machine) -> Agent {
        let sock = m.dir.join("qga.sock");
        let state = m.dir.join("qga-state");
        std::fs::create_dir_all(&state).unwrap();
        let script = format!(
            "mount --bind {}/sys /sys || exit 99\nPATH=$PATH:/usr/sbin:/sbin exec qemu-ga -m unix-listen -p {} -t {}",
            m.root.display(),
            sock.display(),
            state.display()
        );
        let child = Command::new("unshare")
            .args(["-m", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("unshare (util-linux) must be installed");
        let mut agent_child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let stream = loop {
            if let Ok(s) = UnixStream::connect(&sock) {
                break s;
            }
            let child = agent_child.as_mut().unwrap();
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                use std::io::Read;
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                panic!("qemu-ga (Debian package qemu-guest-agent) did not start: {status}: {err}");
            }
            assert!(Instant::now() < deadline, "qemu-ga never listened");
            std::thread::sleep(Duration::from_millis(20));
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Agent {
            child: agent_child.take().unwrap(),
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    /// One QGA command; its whole reply.
    fn execute(&mut self, command: &str, arguments: Option<Value>) -> Value {
        let mut msg = json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        writeln!(self.writer, "{msg}").unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }

    fn set_blocks(&mut self, blocks: &[(u64, bool)]) -> Value {
        let blks: Vec<Value> = blocks
            .iter()
            .map(|&(i, online)| json!({"phys-index": i, "online": online, "can-offline": true}))
            .collect();
        self.execute("guest-set-memory-blocks", Some(json!({ "mem-blks": blks })))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn block(m: &Machine, b: u64, file: &str) -> String {
    m.read(&format!("sys/devices/system/memory/memory{b}/{file}"))
}

#[test]
fn qemu_ga_lists_onlines_and_offlines_blocks_with_the_kernels_errnos() {
    let m = Machine::mount("qemu-ga", &["--cmdline", "memhp_default_state=offline"]);
    m.ctl(&["hotadd", "d1", "512M"]);
    let mut ga = Agent::start(&m);

    assert_eq!(
        ga.execute("guest-get-memory-block-info", None),
        json!({"return": {"size": 134217728}})
    );
    // Boot blocks 0-7 online, the DIMM's 32-35 offline; 6.1's `removable`
    // is 1 for every block, which qemu-ga reports as can-offline.
    let listed = |online: &[u64], offline: &[u64]| -> Value {
        let mut all: Vec<(u64, bool)> = online.iter().map(|&b| (b, true)).collect();
        all.extend(offline.iter().map(|&b| (b, false)));
        all.sort();
        json!({"return": all
            .into_iter()
            .map(|(b, on)| json!({"phys-index": b, "online": on, "can-offline": true}))
            .collect::<Vec<_>>()})
    };
    assert_eq!(
        ga.execute("guest-get-memory-blocks", None),
        listed(&[0, 1, 2, 3, 4, 5, 6, 7], &[32, 33, 34, 35])
    );

    // Onlining writes "online": the kernel zone for a DIMM above 4 GiB. A
    // block that does not exist is ENOENT at its directory's open.
    assert_eq!(
        ga.set_blocks(&[(32, true), (33, true), (99, true)]),
        json!({"return": [
            {"phys-index": 32, "response": "success"},
            {"phys-index": 33, "response": "success"},
            {"phys-index": 99, "response": "not-found", "error-code": 2},
        ]})
    );
    assert_eq!(block(&m, 32, "state"), "online\n");
    assert_eq!(block(&m, 33, "valid_zones"), "Normal\n");

    // Offlining: memory0 spans DMA and DMA32 (EINVAL); memory32, the first
    // block onlined into Normal, holds kernel allocations (EBUSY); memory33
    // goes; a block already in the asked state is left alone and reported
    // as a success.
    assert_eq!(
        ga.set_blocks(&[(0, false), (32, false), (33, false), (34, false), (7, true)]),
        json!({"return": [
            {"phys-index": 0, "response": "operation-failed", "error-code": 22},
            {"phys-index": 32, "response": "operation-failed", "error-code": 16},
            {"phys-index": 33, "response": "success"},
            {"phys-index": 34, "response": "success"},
            {"phys-index": 7, "response": "success"},
        ]})
    );
    assert_eq!(block(&m, 0, "state"), "online\n");
    assert_eq!(block(&m, 32, "state"), "online\n");
    assert_eq!(block(&m, 33, "state"), "offline\n");
    assert_eq!(
        ga.execute("guest-get-memory-blocks", None),
        listed(&[0, 1, 2, 3, 4, 5, 6, 7, 32], &[33, 34, 35])
    );

    // A host unplug removes the DIMM's blocks; the agent no longer finds
    // them (the online one is offlined by the eject first).
    m.ctl(&["hotadd", "d2", "256M"]);
    assert_eq!(
        ga.set_blocks(&[(36, true), (37, true)]),
        json!({"return": [
            {"phys-index": 36, "response": "success"},
            {"phys-index": 37, "response": "success"},
        ]})
    );
    m.ctl(&["unplug", "d2"]);
    assert_eq!(
        ga.set_blocks(&[(36, false)]),
        json!({"return": [{"phys-index": 36, "response": "not-found", "error-code": 2}]})
    );
}
