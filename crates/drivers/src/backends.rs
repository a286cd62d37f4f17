//! QEMU memory-backend objects (`object-add memory-backend-ram`), which a
//! `pc-dimm` names as its `memdev`: one backend per DIMM, kept until
//! `object-del` once no DIMM uses it.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// The backend object types that can back a DIMM.
const BACKEND_TYPES: [&str; 3] = [
    "memory-backend-ram",
    "memory-backend-file",
    "memory-backend-memfd",
];

/// Why a backend operation was refused (QEMU's error texts).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error("attempt to add duplicate property '{0}' to object (type 'container')")]
    Duplicate(String),
    #[error("invalid object type: {0}")]
    BadType(String),
    #[error("can't create backend with size 0")]
    ZeroSize,
    #[error("Parameter 'mem-path' is missing")]
    NoMemPath,
    #[error("object '{0}' not found")]
    NotFound(String),
    #[error("object '{0}' is in use, can not be deleted")]
    InUse(String),
    #[error("Property 'pc-dimm.memdev' can't find value '{0}'")]
    NoMemdev(String),
    #[error("can't use already busy memdev: {0}")]
    Busy(String),
}

/// One backend object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub qom_type: String,
    pub size: u64,
    /// The DIMM whose `memdev` it is.
    pub user: Option<String>,
    /// Created by a hot-add that named no backend (`mem-ID`, as the
    /// oracle's host steps do): deleted with its DIMM.
    pub implicit: bool,
    /// Given on QEMU's command line (`-object`), not by QMP.
    pub command_line: bool,
    /// `share` (a memfd backend shares its memory by default).
    pub share: bool,
}

/// The machine's backend objects, by id.
#[derive(Default)]
pub struct MemoryBackends {
    objects: Mutex<BTreeMap<String, Backend>>,
}

impl MemoryBackends {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Backend>> {
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `object-add`.
    pub fn add(
        &self,
        qom_type: &str,
        id: &str,
        size: u64,
        mem_path: Option<&str>,
        implicit: bool,
    ) -> Result<(), BackendError> {
        if !BACKEND_TYPES.contains(&qom_type) {
            return Err(BackendError::BadType(qom_type.to_string()));
        }
        // A file backend maps a file: it needs one.
        if qom_type == "memory-backend-file" && mem_path.is_none() {
            return Err(BackendError::NoMemPath);
        }
        let mut objects = self.lock();
        if objects.contains_key(id) {
            return Err(BackendError::Duplicate(id.to_string()));
        }
        if size == 0 {
            return Err(BackendError::ZeroSize);
        }
        objects.insert(
            id.to_string(),
            Backend {
                qom_type: qom_type.to_string(),
                size,
                user: None,
                implicit,
                command_line: false,
                share: qom_type == "memory-backend-memfd",
            },
        );
        Ok(())
    }

    /// Mark the backend `id` as one of QEMU's command line.
    pub fn set_command_line(&self, id: &str) {
        if let Some(b) = self.lock().get_mut(id) {
            b.command_line = true;
        }
    }

    /// Every backend with its id.
    pub fn list(&self) -> Vec<(String, Backend)> {
        self.lock()
            .iter()
            .map(|(id, b)| (id.clone(), b.clone()))
            .collect()
    }

    /// `object-del`.
    pub fn del(&self, id: &str) -> Result<(), BackendError> {
        let mut objects = self.lock();
        match objects.get(id) {
            None => Err(BackendError::NotFound(id.to_string())),
            Some(b) if b.user.is_some() => Err(BackendError::InUse(id.to_string())),
            Some(_) => {
                objects.remove(id);
                Ok(())
            }
        }
    }

    /// A DIMM `dimm` takes backend `id` as its memdev; returns its size.
    pub fn bind(&self, id: &str, dimm: &str) -> Result<u64, BackendError> {
        let mut objects = self.lock();
        let b = objects
            .get_mut(id)
            .ok_or_else(|| BackendError::NoMemdev(id.to_string()))?;
        if b.user.is_some() {
            return Err(BackendError::Busy(id.to_string()));
        }
        b.user = Some(dimm.to_string());
        Ok(b.size)
    }

    /// DIMM `dimm` is gone (or was never plugged): its backend is free
    /// again, and deleted if the hot-add created it.
    pub fn release(&self, dimm: &str) {
        let mut objects = self.lock();
        objects.retain(|_, b| !(b.implicit && b.user.as_deref() == Some(dimm)));
        for b in objects.values_mut() {
            if b.user.as_deref() == Some(dimm) {
                b.user = None;
            }
        }
    }

    /// The id of the backend DIMM `dimm` uses.
    pub fn of(&self, dimm: &str) -> Option<String> {
        self.lock()
            .iter()
            .find(|(_, b)| b.user.as_deref() == Some(dimm))
            .map(|(id, _)| id.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_backend_cannot_be_deleted_or_shared() {
        let b = MemoryBackends::default();
        b.add("memory-backend-ram", "m1", 1 << 28, None, false)
            .unwrap();
        assert_eq!(
            b.add("memory-backend-ram", "m1", 1 << 28, None, false),
            Err(BackendError::Duplicate("m1".into()))
        );
        assert_eq!(b.bind("m1", "d1"), Ok(1 << 28));
        assert_eq!(b.bind("m1", "d2"), Err(BackendError::Busy("m1".into())));
        assert_eq!(b.del("m1"), Err(BackendError::InUse("m1".into())));
        b.release("d1");
        assert_eq!(b.del("m1"), Ok(()));
        assert_eq!(b.del("m1"), Err(BackendError::NotFound("m1".into())));
    }

    #[test]
    fn an_implicit_backend_goes_with_its_dimm() {
        let b = MemoryBackends::default();
        b.add("memory-backend-ram", "mem-d1", 1 << 27, None, true)
            .unwrap();
        b.bind("mem-d1", "d1").unwrap();
        b.release("d1");
        assert_eq!(
            b.del("mem-d1"),
            Err(BackendError::NotFound("mem-d1".into()))
        );
    }
}
