//! The crate's single error type.

/// Everything that can go wrong in this crate.
///
/// Messages never contain input content (a secret must not end up in a log line): at most sizes,
/// limits, and a line/column position for malformed JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A full snapshot (or a document given to [`crate::sanitize_document`]) is larger than
    /// [`crate::MAX_SNAPSHOT_BYTES`]. The caller tells the visitor; the call continues.
    #[error("snapshot of {len} bytes is over the {max}-byte limit")]
    SnapshotTooLarge {
        /// Size of the rejected input, in bytes.
        len: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// A change batch is larger than [`crate::MAX_CHANGE_BATCH_BYTES`].
    #[error("change batch of {len} bytes is over the {max}-byte limit")]
    ChangeBatchTooLarge {
        /// Size of the rejected input, in bytes.
        len: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// The node tree would hold more than [`crate::MAX_NODES`] nodes.
    #[error("more than {max} nodes")]
    TooManyNodes {
        /// The limit.
        max: usize,
    },
    /// The node tree is nested deeper than [`crate::MAX_DEPTH`] levels.
    #[error("nesting deeper than {max} levels")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// The input is not the JSON this crate expects (see `PROTOCOL.md`). Only the position is
    /// reported, never the offending text.
    #[error("malformed {what} JSON at line {line}, column {column}")]
    Malformed {
        /// `"snapshot"` or `"change batch"`.
        what: &'static str,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
    },
    /// A snapshot without a root node, or whose first node has a parent.
    #[error("snapshot has no root node")]
    NoRoot,
    /// A change batch arrived before any snapshot.
    #[error("change batch before the first snapshot")]
    NoSnapshot,
}

impl Error {
    /// A stable snake_case code for the wire (`snapshot_too_large`, `malformed`…).
    pub fn code(&self) -> &'static str {
        match self {
            Error::SnapshotTooLarge { .. } => "snapshot_too_large",
            Error::ChangeBatchTooLarge { .. } => "change_batch_too_large",
            Error::TooManyNodes { .. } => "too_many_nodes",
            Error::TooDeep { .. } => "too_deep",
            Error::Malformed { .. } => "malformed",
            Error::NoRoot => "no_root",
            Error::NoSnapshot => "no_snapshot",
        }
    }

    pub(crate) fn malformed(what: &'static str, e: &serde_json::Error) -> Self {
        Error::Malformed {
            what,
            line: e.line(),
            column: e.column(),
        }
    }
}
