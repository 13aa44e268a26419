//! Co-browse: the sanitizer that masks every sensitive field and strips everything executable from
//! the visitor's page before an agent can see it (a pure function of a policy and its input), and
//! the relay's sequencing. Only a value the sanitizer made can be relayed to an agent.
//!
//! ```
//! assert_eq!(frontdesk_cobrowse::MAX_SNAPSHOT_BYTES, 5 * 1024 * 1024);
//! ```

/// Largest full page snapshot the relay accepts.
pub const MAX_SNAPSHOT_BYTES: usize = 5 * 1024 * 1024;
/// Largest batch of incremental changes the relay accepts.
pub const MAX_CHANGE_BATCH_BYTES: usize = 256 * 1024;
