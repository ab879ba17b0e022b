//! What a TV and a node say to each other about one aggregation round, on
//! top of the [`secagg`](crate::secagg) messages: the invitation with the
//! round's layout, each step, and the outcome.
//!
//! One round = one secure-aggregation session over one region's cohort: the
//! node invites TVs as they sync ([`NodeToTv::Invite`]), each TV answers
//! with its advertised keys and, sync after sync, the next step
//! ([`TvToNode`]); the node relays the server's messages
//! ([`NodeToTv::Step`]) and finally says whether the TV's input is in a sum
//! it used ([`NodeToTv::Finished`]).
//!
//! What the TV decides, not the node: how much noise it adds (from its own
//! budget and the round's threshold t: each member adds σ/√t, so any t
//! surviving members carry σ), whether the round is acceptable (a threshold
//! below the TV's minimum, or a layout too large, is declined), and when it
//! has spent its budget. What it never sends: anything but these messages.

use serde::{Deserialize, Serialize};

use crate::contribution::ContributionLayout;
use crate::secagg::{ClientId, Config, ToClient, ToServer};

/// A round's parameters, as the node announces them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundSpec {
    /// The secure-aggregation session (its `session` names the round; its
    /// `dim` equals the layout's dimension).
    pub session: Config,
    /// The contribution layout: catalog slots, pair titles, window.
    pub layout: ContributionLayout,
    /// The catalog slot of each pair title, by pair index.
    pub pair_slots: Vec<u32>,
    /// The catalog version the slots belong to: slot `i` is the `i`-th live
    /// title of that version in content-id order (a TV holding another
    /// version declines the round).
    pub catalog_version: u64,
    /// Each 0/1 entry travels as 0/`scale`, with the noise scaled alike (the
    /// privacy cost does not change): with many members each one's noise
    /// share σ/√t would fall below one integer unit, where summed discrete
    /// Gaussians stop behaving like one; scaled, it stays above. The node
    /// divides the sum by `scale`. At least 1, at most [`MAX_SCALE`].
    pub scale: u32,
}

/// The largest [`RoundSpec::scale`] a TV accepts.
pub const MAX_SCALE: u32 = 1024;

/// The node's part of a round, carried by a sync's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeToTv {
    /// Take part in this round as member `member`.
    Invite {
        /// The round.
        spec: RoundSpec,
        /// The TV's member id in it.
        member: ClientId,
    },
    /// The server's next message in round `session`.
    Step {
        /// The round.
        session: u64,
        /// The message.
        msg: ToClient,
    },
    /// Round `session` is over: `included` tells whether this TV's input is
    /// in the sum the node used (if not, the TV offers the same noisy
    /// release again in a later round).
    Finished {
        /// The round.
        session: u64,
        /// Whether the TV's input was used.
        included: bool,
    },
}

/// The TV's part of a round, carried by a sync's request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TvToNode {
    /// The round.
    pub session: u64,
    /// The message.
    pub msg: ToServer,
}
