//! memhp-scenario: the real-kernel oracle's scenario and transcript formats,
//! and what a runner needs to replay scenarios against memhp.
//!
//! * [`Scenario`]: the `.scn` parser (headers, typed QEMU arguments, steps);
//! * [`Transcript`] and [`diff_transcripts`]: the transcript model and the
//!   comparison behind `memhp scenario diff EXPECTED ACTUAL`;
//! * [`ohelper_main`]: the guest helper commands (`write`, `read`, `dump`,
//!   `blocks`, `ms`) with the guest's exact output;
//! * [`HELPERS_SH`]: the shell helper library scenario steps call.
//!
//! Nothing here depends on the rest of memhp or on the oracle folder at run
//! time.

pub mod diff;
pub mod helpers_sh;
pub mod ohelper;
pub mod qemu;
pub mod scenario;
pub mod shlex;
pub mod size;
pub mod transcript;

pub use diff::{
    classify_line, diff_texts, diff_transcripts, is_page_dump_line, normalize_line, render_table,
    speed_ratio, DiffReport, LineKind, Mismatch, NumberedLine,
};
pub use helpers_sh::HELPERS_SH;
pub use ohelper::{ohelper_main, ohelper_run};
pub use qemu::{
    CpuRange, GenericInitiator, MemoryBackend, NumaNode, PcDimm, QemuArg, QemuArgError,
    VirtioMemPci,
};
pub use scenario::{
    rewrite_ohelper_calls, HostAction, HostStep, Hotadd, LoadError, Scenario, ScenarioError,
    ScenarioErrorKind, Step,
};
pub use size::{parse_qemu_size, parse_size, MemSpec, MemSpecError, SizeError};
pub use transcript::{EndLine, Transcript, TranscriptError};
