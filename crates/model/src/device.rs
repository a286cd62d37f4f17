//! What every device of the driver core has besides its own attributes:
//! the `power/` directory (runtime PM of a device without a driver) and the
//! `uevent` file that synthesises an event (`kobject_synth_uevent`).

use crate::events::UeventAction;
use crate::system::System;
use serde::{Deserialize, Serialize};

/// The writable runtime-PM state of one device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevicePower {
    /// `power/control` = `on` (`pm_runtime_forbid`: a usage count held).
    pub forbidden: bool,
    /// `power/async` = `enabled`.
    pub async_suspend: bool,
}

/// A device as the driver core names it in messages: bus and device name
/// (`memory memory3`), and its kobject path (`/devices/system/memory/memory3`).
#[derive(Clone, Copy, Debug)]
pub struct Device<'a> {
    pub bus: &'a str,
    pub name: &'a str,
    pub devpath: &'a str,
}

/// Why a synthetic uevent was refused (`-EINVAL` either way).
const UNKNOWN_ACTION: &str = "unknown uevent action string";
const BAD_ARGUMENTS: &str = "incorrect uevent action arguments";

/// One trailing newline or NUL is not part of the value.
fn trim_end(buf: &[u8]) -> &[u8] {
    match buf.last() {
        Some(b'\n' | b'\0') => &buf[..buf.len() - 1],
        _ => buf,
    }
}

/// `uuid_is_valid`: 8-4-4-4-12 hex digits.
fn uuid_is_valid(s: &[u8]) -> bool {
    s.len() >= 36
        && s[..36].iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// `kobject_action_args`: a UUID, then ` KEY=VALUE` words of letters and
/// digits.
fn action_args_valid(args: &[u8]) -> bool {
    let args = trim_end(args);
    if !uuid_is_valid(args) {
        return false;
    }
    let mut rest = &args[36..];
    while !rest.is_empty() {
        let Some(pair) = rest.strip_prefix(b" ") else {
            return false;
        };
        let end = pair.iter().position(|&c| c == b' ').unwrap_or(pair.len());
        let (word, tail) = pair.split_at(end);
        let Some(eq) = word.iter().position(|&c| c == b'=') else {
            return false;
        };
        let (key, value) = (&word[..eq], &word[eq + 1..]);
        if key.is_empty() || value.is_empty() {
            return false;
        }
        if !key.iter().chain(value).all(u8::is_ascii_alphanumeric) {
            return false;
        }
        rest = tail;
    }
    true
}

impl System {
    /// The runtime-PM state of the device at `devpath`.
    pub fn device_power(&self, devpath: &str) -> DevicePower {
        self.power.get(devpath).copied().unwrap_or_default()
    }

    /// A write to `power/control` (`auto` or `on`) or `power/async`
    /// (`enabled` or `disabled`); anything else is `EINVAL`.
    pub fn set_device_power(
        &mut self,
        devpath: &str,
        file: &str,
        value: &[u8],
    ) -> Result<(), crate::HotplugError> {
        let is = |w: &[u8]| crate::kstr::sysfs_streq(value, w);
        let mut p = self.device_power(devpath);
        match file {
            "control" if is(b"on") => p.forbidden = true,
            "control" if is(b"auto") => p.forbidden = false,
            "async" if is(b"enabled") => p.async_suspend = true,
            "async" if is(b"disabled") => p.async_suspend = false,
            _ => return Err(crate::HotplugError::Invalid("bad power setting")),
        }
        if p == DevicePower::default() {
            self.power.remove(devpath);
        } else {
            self.power.insert(devpath.to_string(), p);
        }
        self.touch_global();
        Ok(())
    }

    /// A write to a device's `uevent` file (`uevent_store`): an action
    /// word, optionally a UUID and `KEY=VALUE` arguments. A refused write
    /// logs why, as the kernel does; an accepted one reaches the uevent
    /// log (the arguments' `SYNTH_*` variables are not modelled).
    pub fn synth_uevent(&mut self, dev: Device<'_>, buf: &[u8]) -> Result<(), crate::HotplugError> {
        let line = trim_end(buf);
        let (word, args) = match line.iter().position(|&c| c == b' ') {
            Some(i) => (&line[..i], Some(&line[i + 1..])),
            None => (line, None),
        };
        let action = match word {
            b"add" => Some(UeventAction::Add),
            b"remove" => Some(UeventAction::Remove),
            b"online" => Some(UeventAction::Online),
            b"offline" => Some(UeventAction::Offline),
            b"change" => Some(UeventAction::Change),
            b"move" => Some(UeventAction::Move),
            b"bind" => Some(UeventAction::Bind),
            b"unbind" => Some(UeventAction::Unbind),
            _ => None,
        };
        let refusal = match (action, args) {
            (None, _) => Some(UNKNOWN_ACTION),
            (Some(_), Some(a)) if !action_args_valid(a) => Some(BAD_ARGUMENTS),
            _ => None,
        };
        // A subsystem's root directory (no bus) is not a device the driver
        // core reports on or sends events for here.
        let on_bus = !dev.bus.is_empty();
        if let Some(msg) = refusal {
            self.events
                .log(format!("synth uevent: {}: {msg}", dev.devpath));
            if on_bus {
                self.events.log(format!(
                    "{} {}: uevent: failed to send synthetic uevent: -22",
                    dev.bus, dev.name
                ));
            }
            return Err(crate::HotplugError::Invalid("bad uevent"));
        }
        if let (Some(a), true) = (action, on_bus) {
            self.events.uevent(a, dev.devpath.to_string(), dev.bus);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot() -> System {
        let spec = crate::machine::QemuPc::default()
            .machine("", crate::KernelVersion::V6_1)
            .unwrap();
        System::boot(&spec).unwrap()
    }

    const MEMORY3: Device<'static> = Device {
        bus: "memory",
        name: "memory3",
        devpath: "/devices/system/memory/memory3",
    };

    #[test]
    fn a_synthetic_change_reaches_the_uevent_log_and_a_bad_one_is_logged() {
        let mut s = boot();
        let seq = s.events.seqnum;
        assert_eq!(s.synth_uevent(MEMORY3, b"change\n"), Ok(()));
        let ev = s.events.uevents_after(seq);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].action, UeventAction::Change);
        assert_eq!(ev[0].devpath, "/devices/system/memory/memory3");
        s.events.take_klog();
        assert!(s.synth_uevent(MEMORY3, b"bogus").is_err());
        assert_eq!(
            s.events.take_klog(),
            [
                "synth uevent: /devices/system/memory/memory3: unknown uevent action string",
                "memory memory3: uevent: failed to send synthetic uevent: -22",
            ]
        );
        assert_eq!(s.events.uevents_after(seq).len(), 1);
    }

    #[test]
    fn power_control_on_forbids_and_auto_allows() {
        let mut s = boot();
        let p = MEMORY3.devpath;
        assert!(s.set_device_power(p, "control", b"off").is_err());
        s.set_device_power(p, "control", b"on\n").unwrap();
        assert!(s.device_power(p).forbidden);
        s.set_device_power(p, "control", b"auto").unwrap();
        assert_eq!(s.device_power(p), DevicePower::default());
        assert!(s.power.is_empty());
    }

    #[test]
    fn action_arguments_need_a_uuid_then_alphanumeric_pairs() {
        let uuid = b"01234567-89ab-cdef-0123-456789abcdef";
        assert!(action_args_valid(uuid));
        assert!(action_args_valid(&[uuid.as_slice(), b" A=B c1=2"].concat()));
        assert!(!action_args_valid(b"1234-5678 A=B"));
        assert!(!action_args_valid(&[uuid.as_slice(), b" A="].concat()));
        assert!(!action_args_valid(&[uuid.as_slice(), b" A_B=1"].concat()));
        assert!(!action_args_valid(b""));
    }
}
