//! The page runs against a page-per-entry array: any sequence of
//! assignments, allocations and reassignments leaves the same page states,
//! counts that match them, and runs that are sorted, disjoint and merged.

use memhp_model::pages::{Fit, PageMap, PageState};
use proptest::prelude::*;

const NR: u64 = 4096;
const STATES: [PageState; 5] = [
    PageState::Reserved,
    PageState::Unmovable,
    PageState::Movable,
    PageState::Pinned,
    PageState::HwPoison,
];

#[derive(Clone, Debug)]
enum Op {
    Assign(u64, u64, Option<usize>),
    Alloc(usize, u64, u8),
    Reassign(usize, Option<usize>, u64, bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..NR, 0..NR, proptest::option::of(0..STATES.len())).prop_map(|(a, b, s)| Op::Assign(
            a.min(b),
            a.max(b),
            s
        )),
        (0..STATES.len(), 0..2000u64, 0..4u8).prop_map(|(s, n, f)| Op::Alloc(s, n, f)),
        (
            0..STATES.len(),
            proptest::option::of(0..STATES.len()),
            0..2000u64,
            any::<bool>()
        )
            .prop_map(|(f, t, n, l)| Op::Reassign(f, t, n, l)),
    ]
}

fn expand(m: &PageMap) -> Vec<Option<PageState>> {
    let mut pages = vec![None; NR as usize];
    for (s, n, st) in m.runs() {
        for p in &mut pages[s as usize..(s + n) as usize] {
            *p = Some(st);
        }
    }
    pages
}

proptest! {
    #[test]
    fn runs_match_a_page_array(ops in proptest::collection::vec(op(), 1..40)) {
        let mut m = PageMap::new(NR);
        let mut naive: Vec<Option<PageState>> = vec![None; NR as usize];
        for o in ops {
            match o {
                Op::Assign(a, b, s) => {
                    let st = s.map(|i| STATES[i]);
                    m.assign(a, b, st);
                    for p in &mut naive[a as usize..b as usize] {
                        *p = st;
                    }
                }
                Op::Alloc(s, n, f) => {
                    let fit = [Fit::UnmovableBlocks, Fit::MovableBlocks, Fit::FreePageblocks, Fit::Any][f as usize];
                    for (a, b) in m.alloc(STATES[s], n, fit, (0, NR)) {
                        for p in &mut naive[a as usize..b as usize] {
                            prop_assert_eq!(*p, None, "allocated a page in use");
                            *p = Some(STATES[s]);
                        }
                    }
                }
                Op::Reassign(from, to, n, lowest) => {
                    let to = to.map(|i| STATES[i]);
                    let got = m.reassign(STATES[from], to, n, lowest);
                    let moved: u64 = got.iter().map(|r| r.1 - r.0).sum();
                    let had = naive.iter().filter(|p| **p == Some(STATES[from])).count() as u64;
                    prop_assert_eq!(moved, n.min(had));
                    for (a, b) in got {
                        for p in &mut naive[a as usize..b as usize] {
                            prop_assert_eq!(*p, Some(STATES[from]));
                            *p = to;
                        }
                    }
                }
            }
            prop_assert_eq!(expand(&m), naive.clone());
            let runs: Vec<_> = m.runs().collect();
            for w in runs.windows(2) {
                prop_assert!(w[0].0 + w[0].1 <= w[1].0, "overlap or disorder: {:?}", w);
                prop_assert!(!(w[0].0 + w[0].1 == w[1].0 && w[0].2 == w[1].2), "unmerged: {:?}", w);
            }
            for st in STATES {
                let n = naive.iter().filter(|p| **p == Some(st)).count() as u64;
                prop_assert_eq!(m.count(st), n);
            }
            prop_assert_eq!(m.free(), naive.iter().filter(|p| p.is_none()).count() as u64);
        }
    }
}
