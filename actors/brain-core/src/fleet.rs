//! What the TV knows of its region's fleet: the node's published, private
//! aggregates (noisy, thresholded counts over many TVs, never one TV's
//! data), as fleet pages deliver them, and the two signals the recommender
//! draws from them:
//!
//! * **popularity**: a title's total over the most watched title's, 0–1;
//! * **watched together**: for a candidate c and the viewer's recent watch p,
//!   the pair total n(p, c) over √(n(p)·n(c)) (cosine of the two titles'
//!   viewer sets, as item kNN computes it), summed over the recent watches.
//!
//! Pages arrive in order (offset = titles received); a page of another
//! version starts the knowledge again only at offset 0, and a page that does
//! not continue where the TV is is ignored (the next sync asks again from
//! the TV's cursor). Bounded by the page limits times the node's published
//! titles; a page is refused past [`MAX_FLEET_TITLES`].

use std::collections::HashMap;

use omega_protocol::{ContentId, FleetCursor, FleetPage};
use serde::{Deserialize, Serialize};

/// Most titles of fleet knowledge a TV keeps (pages past it are ignored).
pub const MAX_FLEET_TITLES: usize = 20_000;

/// A title's fleet figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetEntry {
    /// Its noisy watch total.
    pub total: f32,
    /// Titles watched close to it, with their pair totals, largest first.
    pub partners: Vec<(ContentId, f32)>,
}

/// The region's fleet knowledge as far as the TV has read it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetKnowledge {
    /// The version being read or held (0: none).
    pub version: u64,
    /// Titles of that version received, in the node's order (most watched
    /// first).
    pub order: Vec<ContentId>,
    /// The figures by title.
    pub titles: HashMap<ContentId, FleetEntry>,
}

/// What applying a page did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageApplied {
    /// Its titles were added.
    Added(usize),
    /// It did not continue the TV's reading (other version at a non-zero
    /// offset, or another offset): ignored.
    OutOfOrder,
    /// Taking it would pass [`MAX_FLEET_TITLES`]: ignored.
    Full,
}

impl FleetKnowledge {
    /// Where the TV is: the next sync asks from here.
    pub fn cursor(&self) -> FleetCursor {
        FleetCursor {
            version: self.version,
            offset: u32::try_from(self.order.len()).unwrap_or(u32::MAX),
        }
    }

    /// Whether nothing is known.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Applies one page (see the module docs).
    pub fn apply(&mut self, page: &FleetPage) -> PageApplied {
        let fresh = page.version != self.version;
        if fresh && page.offset != 0 {
            return PageApplied::OutOfOrder;
        }
        if !fresh && page.offset as usize != self.order.len() {
            return PageApplied::OutOfOrder;
        }
        let held = if fresh { 0 } else { self.order.len() };
        if held + page.titles.len() > MAX_FLEET_TITLES {
            return PageApplied::Full;
        }
        if fresh {
            *self = FleetKnowledge {
                version: page.version,
                ..FleetKnowledge::default()
            };
        }
        let mut added = 0;
        for t in &page.titles {
            let entry = FleetEntry {
                total: t.total,
                partners: t.partners.clone(),
            };
            if self.titles.insert(t.id.clone(), entry).is_none() {
                self.order.push(t.id.clone());
                added += 1;
            }
        }
        PageApplied::Added(added)
    }

    /// A title's total over the most watched title's, 0–1 (0: unknown).
    pub fn popularity(&self, id: &ContentId) -> f32 {
        let top = self
            .order
            .first()
            .and_then(|t| self.titles.get(t))
            .map_or(0.0, |e| e.total);
        match self.titles.get(id) {
            Some(e) if top > 0.0 => (e.total / top).clamp(0.0, 1.0),
            _ => 0.0,
        }
    }

    /// The partners of `watched` with their normalized pair weight
    /// n(p, c) / √(n(p)·n(c)), 0–1.
    pub fn together<'a>(
        &'a self,
        watched: &ContentId,
    ) -> impl Iterator<Item = (&'a ContentId, f32)> + 'a {
        let entry = self.titles.get(watched);
        let np = entry.map_or(0.0, |e| e.total);
        entry
            .into_iter()
            .flat_map(|e| e.partners.iter())
            .map(move |(c, n)| {
                let nc = self.titles.get(c).map_or(*n, |e| e.total);
                let denom = (np.max(*n) * nc.max(*n)).sqrt();
                (
                    c,
                    if denom > 0.0 {
                        (n / denom).clamp(0.0, 1.0)
                    } else {
                        0.0
                    },
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use omega_protocol::FleetTitle;

    fn id(s: &str) -> ContentId {
        ContentId::new(s).expect("valid id")
    }

    /// (title, total, partners with their pair totals).
    type Titles<'a> = [(&'a str, f32, &'a [(&'a str, f32)])];

    fn page(version: u64, offset: u32, titles: &Titles<'_>) -> FleetPage {
        FleetPage {
            version,
            offset,
            total_titles: 10,
            titles: titles
                .iter()
                .map(|(t, n, p)| FleetTitle {
                    id: id(t),
                    total: *n,
                    partners: p.iter().map(|(c, v)| (id(c), *v)).collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn pages_apply_in_order_and_a_new_version_starts_again() {
        let mut f = FleetKnowledge::default();
        assert_eq!(f.cursor(), FleetCursor::default());
        assert_eq!(
            f.apply(&page(2, 1, &[("a", 1.0, &[])])),
            PageApplied::OutOfOrder
        );
        assert_eq!(
            f.apply(&page(
                2,
                0,
                &[("a", 10.0, &[("b", 4.0)]), ("b", 5.0, &[("a", 4.0)])]
            )),
            PageApplied::Added(2)
        );
        assert_eq!(
            f.cursor(),
            FleetCursor {
                version: 2,
                offset: 2
            }
        );
        assert_eq!(
            f.apply(&page(2, 0, &[("c", 1.0, &[])])),
            PageApplied::OutOfOrder
        );
        assert_eq!(
            f.apply(&page(2, 2, &[("c", 2.0, &[])])),
            PageApplied::Added(1)
        );
        assert!((f.popularity(&id("b")) - 0.5).abs() < 1e-6);
        assert_eq!(f.popularity(&id("z")), 0.0);
        let together: Vec<(&ContentId, f32)> = f.together(&id("a")).collect();
        assert_eq!(together.len(), 1);
        assert!((together[0].1 - 4.0 / 50f32.sqrt()).abs() < 1e-6);
        assert_eq!(
            f.apply(&page(3, 0, &[("z", 1.0, &[])])),
            PageApplied::Added(1)
        );
        assert_eq!(f.order, vec![id("z")]);
        assert_eq!(
            f.cursor(),
            FleetCursor {
                version: 3,
                offset: 1
            }
        );
    }
}
