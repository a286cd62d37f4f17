//! QEMU's device and object ids: which are well formed, where a device
//! without an id lives in the QOM tree, and how `device_del` resolves
//! what it is given.
//!
//! A device added without an id becomes `/machine/peripheral-anon/device[N]`
//! (`N` counts the anonymous devices of the machine's life). memhp keys such
//! a device by that path, so it can never collide with a given id (which
//! cannot contain `/`); QMP leaves the id out wherever it reports one
//! (`query-memory-devices`, `ACPI_DEVICE_OST`, `DEVICE_DELETED`).

/// Where the devices with an id hang.
const PERIPHERAL: &str = "/machine/peripheral/";
/// Where the devices without an id hang.
const PERIPHERAL_ANON: &str = "/machine/peripheral-anon/";

/// `id_wellformed()`: a letter, then letters, digits, `-`, `.` and `_`.
pub fn well_formed(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

/// The key (and QOM path) of the `n`th anonymous device.
pub fn anonymous(n: u32) -> String {
    format!("{PERIPHERAL_ANON}device[{n}]")
}

/// Whether `key` is an anonymous device's.
pub fn is_anonymous(key: &str) -> bool {
    key.starts_with(PERIPHERAL_ANON)
}

/// The id QMP reports for the device keyed `key`: none for an anonymous one.
pub fn reported_id(key: &str) -> Option<&str> {
    (!is_anonymous(key)).then_some(key)
}

/// Add `field: ID` to the QMP object `obj` for the device keyed `key`,
/// unless it is anonymous (QEMU leaves the member out).
pub fn put_id(obj: &mut serde_json::Value, field: &str, key: &str) {
    if let Some(id) = reported_id(key) {
        obj[field] = serde_json::Value::from(id);
    }
}

/// The device's QOM path.
pub fn qom_path(key: &str) -> String {
    match is_anonymous(key) {
        true => key.to_string(),
        false => format!("{PERIPHERAL}{key}"),
    }
}

/// What `device_del` was pointed at (`find_device_state()`: an id is
/// looked up under `/machine/peripheral`, a path from the root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The key of a device, if one is there.
    Device(String),
    /// A container, not a device (the empty id names `/machine/peripheral`
    /// itself).
    Container,
}

/// Resolve `device_del`'s `id`.
pub fn resolve(id: &str) -> Target {
    // With any trailing `/` dropped ("/" becomes "", the root).
    const CONTAINERS: [&str; 4] = [
        "",
        "/machine",
        "/machine/peripheral",
        "/machine/peripheral-anon",
    ];
    if CONTAINERS.contains(&id.trim_end_matches('/')) {
        return Target::Container;
    }
    match id.strip_prefix(PERIPHERAL) {
        Some(name) => Target::Device(name.to_string()),
        None => Target::Device(id.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_start_with_a_letter_and_hold_no_spaces() {
        for good in ["d1", "a.b_c-d", "Z", "vm0"] {
            assert!(well_formed(good), "{good}");
        }
        for bad in ["", "1bad", "has space", "-x", "_x", "a/b", "é", "a:b"] {
            assert!(!well_formed(bad), "{bad:?}");
        }
    }

    #[test]
    fn anonymous_devices_report_no_id_and_their_own_path() {
        let key = anonymous(0);
        assert_eq!(key, "/machine/peripheral-anon/device[0]");
        assert_eq!(reported_id(&key), None);
        assert_eq!(qom_path(&key), key);
        assert_eq!(reported_id("d1"), Some("d1"));
        assert_eq!(qom_path("d1"), "/machine/peripheral/d1");
    }

    #[test]
    fn device_del_resolves_ids_paths_and_containers() {
        assert_eq!(resolve(""), Target::Container);
        assert_eq!(resolve("/machine"), Target::Container);
        assert_eq!(resolve("/"), Target::Container);
        assert_eq!(resolve("/machine/peripheral/"), Target::Container);
        assert_eq!(resolve("d1"), Target::Device("d1".into()));
        assert_eq!(
            resolve("/machine/peripheral/d1"),
            Target::Device("d1".into())
        );
        assert_eq!(resolve(&anonymous(3)), Target::Device(anonymous(3)));
    }
}
