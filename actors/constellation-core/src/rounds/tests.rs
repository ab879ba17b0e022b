//! Rounds driven through the coordinator by real secure-aggregation clients.
