//! The TV's next private release, before noise: which watches it covers and
//! its contribution vector (omega-privacy's layout, given by the node's
//! round).
//!
//! Rules:
//! * a release covers the episodes after the last released one
//!   (`released_upto`, an episode `seq`; `None` before the first release,
//!   since the store's sequence starts at 0), in ring order; the `window` watches
//!   before them pair with them but are not counted again;
//! * a watch counts when its watch fraction is at least `min_fraction` and
//!   the round's layout has a slot for its title (other watches cannot be
//!   expressed and are skipped, which changes no entry);
//! * a release with no new watch is still made (all zeros, then noise): a TV
//!   takes part in every round, so taking part says nothing about viewing;
//! * the plan's `upto` is the newest episode's `seq`, whatever was skipped, so
//!   the next release starts after it.
//!
//! What the vector may reveal is bounded by omega-privacy (one event changes
//! at most 1 + 3·window entries); the caller adds the noise and charges the
//! ledger before anything leaves the TV.

use std::collections::HashMap;

use omega_privacy::{Contribution, ContributionLayout, LayoutError, Watch};
use omega_protocol::ContentId;

use crate::state::BrainState;

/// A round's layout as the TV holds it: the layout and where titles go.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundLayout {
    /// The layout.
    pub layout: ContributionLayout,
    /// Catalog slot of each title the round knows.
    pub slots: HashMap<ContentId, u32>,
    /// Pair index of each title in the round's pair list.
    pub pairs: HashMap<ContentId, u16>,
}

impl RoundLayout {
    fn watch(&self, id: &ContentId) -> Option<Watch> {
        Some(Watch {
            slot: *self.slots.get(id)?,
            pair: self.pairs.get(id).copied(),
        })
    }
}

/// A planned release, before noise.
#[derive(Debug, Clone, PartialEq)]
pub struct ReleasePlan {
    /// The vector (0/1 entries).
    pub contribution: Contribution,
    /// The newest episode covered: the next release starts after it
    /// (`None` while there has never been an episode).
    pub upto: Option<u64>,
    /// Watches counted (for the TV's own stats; never uploaded).
    pub watches: usize,
}

/// The release of the watches after episode `released_upto` in `round`'s
/// layout, counting watches of at least `min_fraction`.
pub fn plan_release(
    state: &BrainState,
    released_upto: Option<u64>,
    round: &RoundLayout,
    min_fraction: f32,
) -> Result<ReleasePlan, LayoutError> {
    let mut earlier = Vec::new();
    let mut new = Vec::new();
    let mut upto = released_upto;
    for ep in &state.episodes {
        let counted = (ep.event.watched_fraction >= min_fraction)
            .then(|| round.watch(&ep.event.content_id))
            .flatten();
        if released_upto.is_some_and(|r| ep.seq <= r) {
            earlier.extend(counted);
        } else {
            upto = upto.max(Some(ep.seq));
            new.extend(counted);
        }
    }
    let contribution = round.layout.build(&earlier, &new)?;
    Ok(ReleasePlan {
        contribution,
        upto,
        watches: new.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Episode;
    use omega_protocol::{ViewingContext, ViewingEvent};

    fn id(s: &str) -> ContentId {
        ContentId::new(s).expect("valid id")
    }

    fn state(watches: &[(&str, f32)]) -> BrainState {
        let mut st = BrainState::default();
        let ctx = ViewingContext::new(20, 4).expect("context");
        for (i, (title, fraction)) in watches.iter().enumerate() {
            let event =
                ViewingEvent::new(id(title), *fraction, 1_000 + i as u64, ctx).expect("event");
            st.push_episode(Episode {
                seq: i as u64 + 1,
                event,
            });
        }
        st
    }

    fn round() -> RoundLayout {
        // Slots: a b c d; pair list: a b c.
        RoundLayout {
            layout: ContributionLayout::new(4, 3, 2).expect("layout"),
            slots: [("a", 0), ("b", 1), ("c", 2), ("d", 3)]
                .into_iter()
                .map(|(t, s)| (id(t), s))
                .collect(),
            pairs: [("a", 0), ("b", 1), ("c", 2)]
                .into_iter()
                .map(|(t, p)| (id(t), p))
                .collect(),
        }
    }

    #[test]
    fn covers_the_watches_after_the_last_release_with_the_window_before_them() {
        // seq 1..=5: a b (released) | x (unknown) d c
        let st = state(&[("a", 1.0), ("b", 1.0), ("x", 1.0), ("d", 0.3), ("c", 0.8)]);
        let r = round();
        let plan = plan_release(&st, Some(2), &r, 0.5).expect("plans");
        assert_eq!(plan.upto, Some(5));
        assert_eq!(plan.watches, 1, "x has no slot, d is below min_fraction");
        let l = &r.layout;
        let mut expected = vec![0i64; l.dimension()];
        expected[2] = 1; // c
        let bc = l.pair_entry(1, 2).expect("pair");
        expected[bc] = 1;
        let ac = l.pair_entry(0, 2).expect("pair");
        // The window of 2 holds counted watches only: b and a (x and d skipped).
        expected[ac] = 1;
        assert_eq!(plan.contribution, expected);
    }

    #[test]
    fn a_release_with_nothing_new_is_all_zeros_and_keeps_its_place() {
        let st = state(&[("a", 1.0), ("b", 1.0)]);
        let plan = plan_release(&st, Some(2), &round(), 0.0).expect("plans");
        assert_eq!(plan.upto, Some(2));
        assert_eq!(plan.watches, 0);
        assert!(plan.contribution.iter().all(|&v| v == 0));
        let empty = plan_release(&BrainState::default(), None, &round(), 0.0).expect("plans");
        assert_eq!((empty.upto, empty.watches), (None, 0));
    }

    #[test]
    fn the_first_episode_ever_seq_0_is_in_the_first_release() {
        let mut st = BrainState::default();
        let ctx = ViewingContext::new(20, 4).expect("context");
        let event = ViewingEvent::new(id("a"), 1.0, 1_000, ctx).expect("event");
        st.push_episode(Episode { seq: 0, event });
        let plan = plan_release(&st, None, &round(), 0.5).expect("plans");
        assert_eq!((plan.upto, plan.watches), (Some(0), 1));
        assert_eq!(plan.contribution[0], 1);
        let after = plan_release(&st, Some(0), &round(), 0.5).expect("plans");
        assert_eq!((after.upto, after.watches), (Some(0), 0));
    }

    #[test]
    fn a_slot_outside_the_layout_is_refused() {
        let st = state(&[("a", 1.0)]);
        let mut r = round();
        r.slots.insert(id("a"), 9);
        assert_eq!(plan_release(&st, None, &r, 0.0), Err(LayoutError::Slot(9)));
    }
}
