//! On-disk formats shared by the pktvault crates.
//!
//! The byte layouts are documented in `schema/README.md`. Every value stored in
//! RocksDB that is not a roaring bitmap carries a format version, and readers
//! reject versions they do not know with [`FormatError`].

pub mod jobs;
pub mod keys;
pub mod segment;
pub mod text;
pub mod time;

pub use segment::{ChunkTimes, PositionTable, SegmentMeta, TsResolution};

/// Magic stored under [`keys::FORMAT_KEY`] in every pktvault index.
pub const INDEX_MAGIC: &str = "pktvault-index";

/// Version of the index layout that this build writes and reads.
pub const INDEX_FORMAT_VERSION: u32 = 4;

/// Number of packets covered by one entry of a segment's time table.
pub const PACKETS_PER_CHUNK: u32 = 16;

/// Number of packets covered by one entry of a segment's position table: a
/// sparse query reads at most this many records to get one packet.
pub const PACKETS_PER_GROUP: u32 = 4;

/// Number of groups of records in one piece of a position table, the unit
/// that a query reads from the index.
pub const GROUPS_PER_PIECE: u32 = 1024;

/// Number of flows in one piece of a flow table, the unit that a query
/// reads from the index.
pub const FLOWS_PER_PIECE: u32 = 128;

/// Errors raised while decoding stored values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The index was written by a different program or is damaged.
    #[error("index format marker is {found:?}, expected {INDEX_MAGIC:?}; this directory was not written by pktvault")]
    BadMagic { found: String },
    /// The index was written by a newer or older pktvault.
    #[error(
        "index format version {found} is not supported by this build (it reads version {INDEX_FORMAT_VERSION}); \
         use the pktvault release that wrote it, or import the segment files again into a new data directory"
    )]
    UnsupportedVersion { found: u32 },
    /// A stored value could not be decoded.
    #[error("stored {what} is damaged: {reason}")]
    Damaged { what: &'static str, reason: String },
}

/// Format marker stored once per index.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct FormatMarker {
    pub magic: String,
    pub version: u32,
}

impl FormatMarker {
    /// Returns the marker this build writes.
    pub fn current() -> Self {
        FormatMarker { magic: INDEX_MAGIC.to_string(), version: INDEX_FORMAT_VERSION }
    }

    /// Checks a stored marker, magic first, then version.
    pub fn check(bytes: &[u8]) -> Result<(), FormatError> {
        let marker: FormatMarker = serde_json::from_slice(bytes)
            .map_err(|err| FormatError::BadMagic { found: format!("<undecodable: {err}>") })?;
        if marker.magic != INDEX_MAGIC {
            return Err(FormatError::BadMagic { found: marker.magic });
        }
        if marker.version != INDEX_FORMAT_VERSION {
            return Err(FormatError::UnsupportedVersion { found: marker.version });
        }
        Ok(())
    }
}
