//! virtio-balloon (`-device virtio-balloon-pci`): QEMU's side (QMP
//! `balloon` sets the guest's target size, `query-balloon` reports what
//! the guest gave) and the guest driver's (`virtio_balloon` inflates and
//! deflates towards the target once it is loaded, see
//! [`memhp_model::balloon`]).

use memhp_model::machine::VirtioBalloonSpec;
use memhp_model::shared::Shared;
use std::sync::Mutex;

/// Why a balloon command failed (QMP error class and text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BalloonError {
    /// QMP `DeviceNotActive`.
    #[error("No balloon device has been activated")]
    NotActive,
    /// QMP `GenericError` for a target that is not a size.
    #[error("Parameter 'target' expects a size")]
    BadTarget,
}

#[derive(Debug, Default)]
struct State {
    /// The guest driver is bound.
    driver: bool,
    /// Pages the device asks the guest to hold (`num_pages`).
    target_pages: u64,
}

/// The machine's balloon device, if it has one.
#[derive(Debug)]
pub struct VirtioBalloon {
    spec: Option<VirtioBalloonSpec>,
    state: Mutex<State>,
}

impl VirtioBalloon {
    pub fn new(spec: Option<VirtioBalloonSpec>) -> Self {
        VirtioBalloon {
            spec,
            state: Mutex::new(State::default()),
        }
    }

    pub fn spec(&self) -> Option<&VirtioBalloonSpec> {
        self.spec.as_ref()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `insmod virtio_balloon`: the driver binds and starts working
    /// towards the target.
    pub fn load_driver(&self, shared: &Shared) {
        if self.spec.is_none() {
            return;
        }
        let mut st = self.lock();
        st.driver = true;
        Self::follow(&st, shared);
    }

    /// QMP `balloon`: the guest should have `value` bytes of the VM's RAM
    /// (`ram`: boot memory plus memory devices) left; the rest goes into
    /// the balloon.
    pub fn set_target(&self, shared: &Shared, ram: u64, value: i64) -> Result<(), BalloonError> {
        if self.spec.is_none() {
            return Err(BalloonError::NotActive);
        }
        let value = u64::try_from(value)
            .ok()
            .filter(|&v| v > 0)
            .ok_or(BalloonError::BadTarget)?;
        let mut st = self.lock();
        st.target_pages = (ram - value.min(ram)) >> 12;
        if st.driver {
            Self::follow(&st, shared);
        }
        Ok(())
    }

    /// `update_balloon_size_func`: inflate or deflate to the target (as far
    /// as memory allows; the guest retries later in vain, memhp once).
    fn follow(st: &State, shared: &Shared) {
        shared.modify(|sys| {
            let now = sys.balloon_pages();
            if st.target_pages > now {
                sys.balloon_inflate(st.target_pages - now);
            } else if st.target_pages < now {
                sys.balloon_deflate(now - st.target_pages);
            }
        });
    }

    /// QMP `query-balloon`: `actual`, the VM's RAM minus what the guest
    /// gave.
    pub fn actual(&self, shared: &Shared, ram: u64) -> Result<u64, BalloonError> {
        if self.spec.is_none() {
            return Err(BalloonError::NotActive);
        }
        let pages = shared.read(|s| s.balloon_pages());
        Ok(ram.saturating_sub(pages << 12))
    }
}
