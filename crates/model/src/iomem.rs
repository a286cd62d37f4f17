//! The iomem resource tree (`/proc/iomem`): System RAM ranges, reserved
//! areas, and driver-owned regions with their children.

use serde::{Deserialize, Serialize};

/// One resource `[start, end]` (inclusive end, as /proc/iomem prints it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    pub start: u64,
    pub end: u64,
    pub name: String,
    pub children: Vec<Resource>,
}

/// Why a resource cannot be requested.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    #[error("range overlaps a busy resource")]
    Conflict,
    #[error("no such resource")]
    NotFound,
}

/// The top level of the resource tree, sorted by start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Iomem {
    pub top: Vec<Resource>,
}

fn overlaps(r: &Resource, start: u64, end: u64) -> bool {
    r.start <= end && start <= r.end
}

impl Iomem {
    /// Insert a resource at the top level, or inside the resource named
    /// `parent_name` that fully contains it. Conflicts with busy resources
    /// (anything overlapping that does not contain it) are refused.
    pub fn request(
        &mut self,
        start: u64,
        end: u64,
        name: &str,
        parent_name: Option<&str>,
    ) -> Result<(), ResourceError> {
        let new = Resource {
            start,
            end,
            name: name.to_string(),
            children: Vec::new(),
        };
        let list = match parent_name {
            Some(p) => {
                let parent = self
                    .top
                    .iter_mut()
                    .find(|r| r.name == p && r.start <= start && end <= r.end)
                    .ok_or(ResourceError::NotFound)?;
                &mut parent.children
            }
            None => &mut self.top,
        };
        if list.iter().any(|r| overlaps(r, start, end)) {
            return Err(ResourceError::Conflict);
        }
        let pos = list.partition_point(|r| r.start < start);
        list.insert(pos, new);
        Ok(())
    }

    /// Whether `[start, end]` overlaps any top-level resource.
    pub fn is_busy(&self, start: u64, end: u64) -> bool {
        self.top.iter().any(|r| overlaps(r, start, end))
    }

    /// Remove the resource exactly `[start, end]` named `name`, wherever it
    /// is (top level or one level down).
    pub fn release(&mut self, start: u64, end: u64, name: &str) -> Result<(), ResourceError> {
        let same = |r: &Resource| r.start == start && r.end == end && r.name == name;
        if let Some(i) = self.top.iter().position(same) {
            self.top.remove(i);
            return Ok(());
        }
        for p in &mut self.top {
            if let Some(i) = p.children.iter().position(same) {
                p.children.remove(i);
                return Ok(());
            }
        }
        Err(ResourceError::NotFound)
    }

    /// Find a resource by predicate, top level or one level down.
    pub fn find_mut(&mut self, mut pred: impl FnMut(&Resource) -> bool) -> Option<&mut Resource> {
        for r in &mut self.top {
            if pred(r) {
                return Some(r);
            }
            if let Some(c) = r.children.iter_mut().find(|c| pred(c)) {
                return Some(c);
            }
        }
        None
    }

    /// Total bytes of resources named `System RAM...` at any depth.
    pub fn system_ram_bytes(&self) -> u64 {
        self.system_ram().iter().map(|r| r.1 - r.0).sum()
    }

    /// The resources named `System RAM...` at any depth, as half-open
    /// byte ranges in address order.
    pub fn system_ram(&self) -> Vec<(u64, u64)> {
        fn walk(list: &[Resource], out: &mut Vec<(u64, u64)>) {
            for r in list {
                if r.name.starts_with("System RAM") {
                    out.push((r.start, r.end + 1));
                } else {
                    walk(&r.children, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.top, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_refuses_overlap_with_busy_ram() {
        let mut io = Iomem::default();
        io.request(0x100000, 0x3ffdffff, "System RAM", None)
            .unwrap();
        assert_eq!(
            io.request(0x3ff00000, 0x40ffffff, "System RAM", None),
            Err(ResourceError::Conflict)
        );
        io.request(0x100000000, 0x11fffffff, "System RAM", None)
            .unwrap();
        assert_eq!(io.top.len(), 2);
        io.release(0x100000000, 0x11fffffff, "System RAM").unwrap();
        assert_eq!(io.top.len(), 1);
    }

    #[test]
    fn children_nest_inside_their_parent() {
        let mut io = Iomem::default();
        io.request(0x100000000, 0x17fffffff, "virtio0", None)
            .unwrap();
        io.request(
            0x100000000,
            0x107ffffff,
            "System RAM (virtio_mem)",
            Some("virtio0"),
        )
        .unwrap();
        assert_eq!(io.top[0].children.len(), 1);
        assert_eq!(io.system_ram_bytes(), 0x8000000);
    }
}
