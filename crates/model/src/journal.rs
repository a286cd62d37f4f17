//! What changed, by generation.
//!
//! Every change visible to user space moves [`System`](crate::System)'s
//! generation and is recorded here with its reach: one memory block's own
//! attributes (an online or offline of that block), or anything at all.
//! Views that cache what they rendered (the FUSE transport's page cache)
//! ask what changed since the generation they last checked and re-render
//! only what that can have reached, instead of everything they hold.
//!
//! "One block" always comes with "and anything that is not a block's own
//! attribute": an online moves zone spans, node and zone counters, the
//! `valid_zones` of offline blocks. A view keeps those outside any block.

use std::collections::{BTreeSet, VecDeque};

/// How many block-scoped changes are kept; older ones are answered as
/// "anything changed".
pub const JOURNAL_CAPACITY: usize = 4096;

/// The reach of one change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeScope {
    /// Global state only (counters, spans, the huge page pool): no
    /// block's own attributes.
    Global,
    /// Block `id`'s own attributes (and everything global).
    Block(u64),
    /// Anything.
    Everything,
}

/// What changed between a generation and now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Changes {
    /// Anything may have changed (or the journal no longer reaches back).
    Everything,
    /// The own attributes of these blocks, and everything global; no other
    /// block's own attributes (none at all when empty).
    Blocks(BTreeSet<u64>),
}

/// The record of recent changes (not serialised: a restored system starts
/// with an empty one, answering "anything" for every earlier generation).
#[derive(Clone, Debug, Default)]
pub struct ChangeJournal {
    /// The last generation whose change reached anything (or that fell out
    /// of the record).
    everything_at: u64,
    /// Block-scoped changes after `everything_at`, oldest first.
    blocks: VecDeque<(u64, u64)>,
}

impl ChangeJournal {
    /// A journal whose knowledge starts at `generation`: anything before
    /// may have changed.
    pub fn starting_at(generation: u64) -> ChangeJournal {
        ChangeJournal {
            everything_at: generation,
            blocks: VecDeque::new(),
        }
    }

    /// Record the change that produced `generation`.
    pub fn record(&mut self, generation: u64, scope: ChangeScope) {
        match scope {
            ChangeScope::Global => {}
            ChangeScope::Everything => {
                self.everything_at = generation;
                self.blocks.clear();
            }
            ChangeScope::Block(id) => {
                if self.blocks.len() == JOURNAL_CAPACITY {
                    if let Some((g, _)) = self.blocks.pop_front() {
                        self.everything_at = g;
                    }
                }
                self.blocks.push_back((generation, id));
            }
        }
    }

    /// What changed after `generation` (a state seen at `generation` plus
    /// these changes is the state now).
    pub fn since(&self, generation: u64) -> Changes {
        if generation < self.everything_at {
            return Changes::Everything;
        }
        let start = self.blocks.partition_point(|&(g, _)| g <= generation);
        Changes::Blocks(self.blocks.range(start..).map(|&(_, id)| id).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(ids: &[u64]) -> Changes {
        Changes::Blocks(ids.iter().copied().collect())
    }

    #[test]
    fn block_changes_are_answered_from_any_later_generation() {
        let mut j = ChangeJournal::starting_at(10);
        j.record(11, ChangeScope::Block(3));
        j.record(12, ChangeScope::Block(5));
        j.record(13, ChangeScope::Block(3));
        assert_eq!(j.since(10), blocks(&[3, 5]));
        assert_eq!(j.since(11), blocks(&[3, 5]));
        assert_eq!(j.since(12), blocks(&[3]));
        assert_eq!(j.since(13), blocks(&[]));
        j.record(14, ChangeScope::Global);
        assert_eq!(j.since(13), blocks(&[]), "global changes name no block");
    }

    #[test]
    fn generation_before_the_journal_started_is_everything() {
        let j = ChangeJournal::starting_at(10);
        assert_eq!(j.since(9), Changes::Everything);
        assert_eq!(j.since(10), blocks(&[]));
    }

    #[test]
    fn everything_change_hides_earlier_block_changes_only_from_older_readers() {
        let mut j = ChangeJournal::starting_at(0);
        j.record(1, ChangeScope::Block(1));
        j.record(2, ChangeScope::Everything);
        j.record(3, ChangeScope::Block(2));
        assert_eq!(j.since(0), Changes::Everything);
        assert_eq!(j.since(1), Changes::Everything);
        assert_eq!(j.since(2), blocks(&[2]));
    }

    #[test]
    fn block_changes_that_fell_out_of_the_record_become_everything() {
        let mut j = ChangeJournal::starting_at(0);
        for g in 1..=JOURNAL_CAPACITY as u64 + 1 {
            j.record(g, ChangeScope::Block(g));
        }
        assert_eq!(
            j.since(0),
            Changes::Everything,
            "generation 1's change is no longer recorded"
        );
        let last = JOURNAL_CAPACITY as u64 + 1;
        assert_eq!(j.since(1), blocks(&(2..=last).collect::<Vec<_>>()));
        assert_eq!(j.since(2), blocks(&(3..=last).collect::<Vec<_>>()));
    }
}
