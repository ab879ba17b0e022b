//! Home of `omega-braind` and `omega-brainctl` (the "TV brain" issue).
