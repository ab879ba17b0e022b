//! A contribution: the only thing a TV uploads about what was watched, as a
//! dense vector of 0/1 entries over a fixed layout, before noise.
//!
//! Layout ([`ContributionLayout`]): `items` entries, one per catalog slot
//! ("this title was watched successfully since the last release", each title
//! once however often), then one entry per unordered pair of the first
//! `pair_items` slots' titles ("these two titles were watched within
//! `window` successful watches of each other, the later one since the last
//! release"). Slots and the pair list (up to `pair_items` titles, each with
//! a pair index) are given by the node, so every TV's vector means the same
//! and vectors can be summed.
//!
//! Sensitivity: adding or removing one viewing event changes at most
//! `1 + 3·window` entries, each by 1, over all releases together: its title's
//! entry, its pairs with the `window` watches before it, and for each of the
//! `window` watches after it one pair lost and one gained (their windows
//! shift by one). Entries are sets, so no entry changes by more than 1 and
//! the L2 sensitivity is √(1 + 3·window) ([`ContributionLayout::l2_sensitivity`]
//! rounds it up). The property test below checks it on random histories.

use serde::{Deserialize, Serialize};

/// Most catalog slots a layout may have.
pub const MAX_ITEMS: u32 = 1 << 20;
/// Most titles that take part in pairs (their pairs number n(n−1)/2).
pub const MAX_PAIR_ITEMS: u16 = 1024;
/// Longest window.
pub const MAX_WINDOW: u8 = 16;

/// Why a layout or a contribution is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// `items` must be in 1..=[`MAX_ITEMS`].
    #[error("layout items {0} outside 1..={MAX_ITEMS}")]
    Items(u32),
    /// `pair_items` must be at most [`MAX_PAIR_ITEMS`] and at most `items`.
    #[error("layout pair items {0} outside 0..={MAX_PAIR_ITEMS} or above the item count")]
    PairItems(u16),
    /// `window` must be in 1..=[`MAX_WINDOW`].
    #[error("layout window {0} outside 1..={MAX_WINDOW}")]
    Window(u8),
    /// A watch names a slot the layout does not have.
    #[error("slot {0} is outside the layout")]
    Slot(u32),
    /// A watch names a pair index the layout does not have.
    #[error("pair index {0} is outside the layout")]
    Pair(u16),
}

/// The shape of every contribution in a region at one time. Decoding
/// checks it as [`ContributionLayout::new`] does (a layout comes from the
/// node, which is not trusted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawLayout")]
pub struct ContributionLayout {
    items: u32,
    pair_items: u16,
    window: u8,
}

/// A layout as decoded, before its checks.
#[derive(Deserialize)]
struct RawLayout {
    items: u32,
    pair_items: u16,
    window: u8,
}

impl TryFrom<RawLayout> for ContributionLayout {
    type Error = LayoutError;
    fn try_from(r: RawLayout) -> Result<Self, LayoutError> {
        ContributionLayout::new(r.items, r.pair_items, r.window)
    }
}

/// One watch, as the layout sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Watch {
    /// The title's catalog slot.
    pub slot: u32,
    /// The title's index in the round's pair list, if it takes part in pairs.
    pub pair: Option<u16>,
}

/// A contribution before noise: 0/1 entries, [`ContributionLayout::dimension`] long.
pub type Contribution = Vec<i64>;

impl ContributionLayout {
    /// A checked layout.
    pub fn new(items: u32, pair_items: u16, window: u8) -> Result<Self, LayoutError> {
        if items == 0 || items > MAX_ITEMS {
            return Err(LayoutError::Items(items));
        }
        if pair_items > MAX_PAIR_ITEMS || u32::from(pair_items) > items {
            return Err(LayoutError::PairItems(pair_items));
        }
        if window == 0 || window > MAX_WINDOW {
            return Err(LayoutError::Window(window));
        }
        Ok(ContributionLayout {
            items,
            pair_items,
            window,
        })
    }

    /// Catalog slots.
    pub fn items(&self) -> u32 {
        self.items
    }

    /// Titles that take part in pairs (pair indices `0..pair_items`).
    pub fn pair_items(&self) -> u16 {
        self.pair_items
    }

    /// Successful watches before a watch that pair with it.
    pub fn window(&self) -> u8 {
        self.window
    }

    /// Pair entries.
    pub fn pairs(&self) -> usize {
        let m = usize::from(self.pair_items);
        m * m.saturating_sub(1) / 2
    }

    /// Entries in a contribution.
    pub fn dimension(&self) -> usize {
        self.items as usize + self.pairs()
    }

    /// The L2 sensitivity over one viewing event, rounded up to an integer:
    /// ⌈√(1 + 3·window)⌉ (see the module docs).
    pub fn l2_sensitivity(&self) -> u32 {
        let changed = 1 + 3 * u32::from(self.window);
        let mut s = 1;
        while s * s < changed {
            s += 1;
        }
        s
    }

    /// The entry of the pair of pair indices `a` and `b` (order does not
    /// matter), if both are in the pair list and differ.
    pub fn pair_entry(&self, a: u32, b: u32) -> Option<usize> {
        let m = u32::from(self.pair_items);
        if a == b || a >= m || b >= m {
            return None;
        }
        let (i, j) = (a.min(b) as usize, a.max(b) as usize);
        let m = m as usize;
        Some(self.items as usize + i * (2 * m - i - 1) / 2 + (j - i - 1))
    }

    /// The pair of pair indices behind entry `entry`, if it is a pair entry.
    pub fn pair_of(&self, entry: usize) -> Option<(u32, u32)> {
        let mut k = entry.checked_sub(self.items as usize)?;
        if k >= self.pairs() {
            return None;
        }
        let m = usize::from(self.pair_items);
        for i in 0..m {
            let row = m - i - 1;
            if k < row {
                return Some((i as u32, (i + 1 + k) as u32));
            }
            k -= row;
        }
        None
    }

    /// The contribution of the successful watches `new` (in time order),
    /// given the successful watches before them (`earlier`, in time order;
    /// only its last `window` matter).
    pub fn build(&self, earlier: &[Watch], new: &[Watch]) -> Result<Contribution, LayoutError> {
        for w in earlier.iter().chain(new) {
            if w.slot >= self.items {
                return Err(LayoutError::Slot(w.slot));
            }
            if let Some(p) = w.pair.filter(|&p| p >= self.pair_items) {
                return Err(LayoutError::Pair(p));
            }
        }
        let window = usize::from(self.window);
        let context = &earlier[earlier.len().saturating_sub(window)..];
        let seq: Vec<Watch> = context.iter().chain(new).copied().collect();
        let mut out = vec![0i64; self.dimension()];
        for (i, w) in seq.iter().enumerate().skip(context.len()) {
            out[w.slot as usize] = 1;
            for p in &seq[i.saturating_sub(window)..i] {
                if let (Some(a), Some(b)) = (w.pair, p.pair) {
                    if let Some(e) = self.pair_entry(a.into(), b.into()) {
                        out[e] = 1;
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Watches of these slots; slots below `pairs` are in the pair list
    /// under their own number.
    fn w(slots: &[u32], pairs: u32) -> Vec<Watch> {
        slots
            .iter()
            .map(|&slot| Watch {
                slot,
                pair: (slot < pairs).then_some(slot as u16),
            })
            .collect()
    }

    #[test]
    fn bad_layouts_are_refused() {
        assert_eq!(ContributionLayout::new(0, 0, 5), Err(LayoutError::Items(0)));
        assert_eq!(
            ContributionLayout::new(10, 11, 5),
            Err(LayoutError::PairItems(11))
        );
        assert_eq!(
            ContributionLayout::new(10, 4, 0),
            Err(LayoutError::Window(0))
        );
        assert_eq!(
            ContributionLayout::new(10, 4, 17),
            Err(LayoutError::Window(17))
        );
        let l = ContributionLayout::new(10, 4, 5).expect("valid");
        assert_eq!(l.build(&[], &w(&[10], 4)), Err(LayoutError::Slot(10)));
        assert_eq!(l.build(&w(&[11], 4), &[]), Err(LayoutError::Slot(11)));
        let bad_pair = Watch {
            slot: 1,
            pair: Some(4),
        };
        assert_eq!(l.build(&[], &[bad_pair]), Err(LayoutError::Pair(4)));
    }

    #[test]
    fn layout_sizes_and_sensitivity() {
        let l = ContributionLayout::new(1682, 256, 5).expect("valid");
        assert_eq!(l.pairs(), 256 * 255 / 2);
        assert_eq!(l.dimension(), 1682 + 32_640);
        assert_eq!(l.l2_sensitivity(), 4);
        assert_eq!(
            ContributionLayout::new(10, 4, 1)
                .expect("valid")
                .l2_sensitivity(),
            2
        );
    }

    #[test]
    fn pair_entries_round_trip_and_cover_the_pair_section() {
        let l = ContributionLayout::new(12, 7, 3).expect("valid");
        let mut seen = std::collections::BTreeSet::new();
        for a in 0..7 {
            for b in 0..7 {
                match l.pair_entry(a, b) {
                    None => assert_eq!(a, b),
                    Some(e) => {
                        assert_eq!(l.pair_entry(b, a), Some(e));
                        assert_eq!(l.pair_of(e), Some((a.min(b), a.max(b))));
                        seen.insert(e);
                    }
                }
            }
        }
        assert_eq!(seen.len(), l.pairs());
        assert_eq!(seen.iter().next(), Some(&12));
        assert_eq!(seen.iter().last(), Some(&(l.dimension() - 1)));
        assert_eq!(l.pair_entry(7, 1), None, "slot 7 takes no part in pairs");
        assert_eq!(l.pair_of(3), None);
        assert_eq!(l.pair_of(l.dimension()), None);
    }

    #[test]
    fn build_marks_titles_once_and_pairs_within_the_window() {
        let l = ContributionLayout::new(8, 4, 2).expect("valid");
        // earlier: 0 1 2 (only 1 2 are in the window), new: 3 3 0 5
        let c = l
            .build(&w(&[0, 1, 2], 4), &w(&[3, 3, 0, 5], 4))
            .expect("builds");
        let items: Vec<i64> = c[..8].to_vec();
        assert_eq!(items, vec![1, 0, 0, 1, 0, 1, 0, 0], "new titles, once each");
        let on: Vec<(u32, u32)> = (8..c.len())
            .filter(|&e| c[e] == 1)
            .filter_map(|e| l.pair_of(e))
            .collect();
        // 3 pairs with 1, 2; second 3 with 2 (and itself: no pair);
        // 0 with 3 (both before it are 3); 5 takes no part in pairs.
        assert_eq!(on, vec![(0, 3), (1, 3), (2, 3)]);
        assert!(c.iter().all(|&v| v == 0 || v == 1));
    }

    /// Both releases of a history split at `split`, concatenated.
    fn releases(l: &ContributionLayout, seq: &[Watch], split: usize) -> Vec<i64> {
        let mut a = l.build(&[], &seq[..split]).expect("builds");
        a.extend(l.build(&seq[..split], &seq[split..]).expect("builds"));
        a
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn one_event_changes_at_most_the_bound(
            slots in proptest::collection::vec(0u32..9, 1..40),
            window in 1u8..6,
            split_frac in 0.0f64..1.0,
            pos_frac in 0.0f64..1.0,
        ) {
            let l = ContributionLayout::new(9, 6, window).expect("valid");
            let seq = w(&slots, 6);
            let split = (split_frac * seq.len() as f64) as usize;
            let pos = ((pos_frac * seq.len() as f64) as usize).min(seq.len() - 1);
            let mut fewer = seq.clone();
            fewer.remove(pos);
            let split_fewer = if pos < split { split - 1 } else { split };
            let a = releases(&l, &seq, split);
            let b = releases(&l, &fewer, split_fewer);
            let changed: i64 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
            prop_assert!(changed <= 1 + 3 * i64::from(window), "{changed} entries changed");
            let s = i64::from(l.l2_sensitivity());
            prop_assert!(changed <= s * s);
        }
    }
}
