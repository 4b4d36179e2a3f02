//! Segment metadata and chunk tables.

use serde::{Deserialize, Serialize};

use crate::FormatError;

/// Timestamp resolution of a segment file (its pcap magic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TsResolution {
    /// Magic `0xa1b2c3d4`: the fraction counts microseconds.
    Micro,
    /// Magic `0xa1b23c4d`: the fraction counts nanoseconds.
    Nano,
}

impl TsResolution {
    /// Nanoseconds in one unit of the fraction.
    pub fn nanos_per_unit(self) -> u64 {
        match self {
            TsResolution::Micro => 1_000,
            TsResolution::Nano => 1,
        }
    }

    /// Returns the little-endian pcap magic of this resolution.
    pub fn pcap_magic(self) -> u32 {
        match self {
            TsResolution::Micro => 0xa1b2_c3d4,
            TsResolution::Nano => 0xa1b2_3c4d,
        }
    }
}

/// Metadata of one segment, stored as versioned JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "format")]
pub enum StoredSegmentMeta {
    #[serde(rename = "1")]
    V1(SegmentMeta),
}

/// Facts about one segment file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentMeta {
    /// Segment id, unique and increasing within an interface.
    pub segment_id: u64,
    /// File name inside the interface's `pcap/` folder.
    pub file_name: String,
    /// pcap LINKTYPE value written in the file header, FCS bits included.
    pub linktype: u32,
    /// Snapshot length written in the file header.
    pub snaplen: u32,
    /// Timestamp resolution of the file.
    pub resolution: TsResolution,
    /// Timestamp of the first packet written, in nanoseconds since the epoch.
    pub first_ts_ns: u64,
    /// Smallest packet timestamp in the segment.
    pub min_ts_ns: u64,
    /// Largest packet timestamp in the segment.
    pub max_ts_ns: u64,
    /// Whether packet timestamps never decrease in file order.
    pub monotonic: bool,
    /// Number of packet records.
    pub packets: u64,
    /// File size in bytes, pcap header included.
    pub file_bytes: u64,
    /// Sum of the original (wire) lengths of the packets.
    pub wire_bytes: u64,
    /// Packets the capture source reported as dropped while this segment was open.
    #[serde(default)]
    pub dropped: u64,
    /// Whether the segment is complete. An open segment's entry is a
    /// checkpoint: its file may hold more bytes than `file_bytes`, and readers
    /// read only up to `file_bytes`.
    #[serde(default = "sealed_default")]
    pub sealed: bool,
}

fn sealed_default() -> bool {
    true
}

impl SegmentMeta {
    /// Encodes the metadata for storage.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(&StoredSegmentMeta::V1(self.clone())).expect("segment metadata serializes")
    }

    /// Decodes stored metadata, rejecting unknown versions.
    pub fn decode(bytes: &[u8]) -> Result<SegmentMeta, FormatError> {
        match serde_json::from_slice::<StoredSegmentMeta>(bytes) {
            Ok(StoredSegmentMeta::V1(meta)) => Ok(meta),
            Err(err) => Err(FormatError::Damaged { what: "segment metadata", reason: err.to_string() }),
        }
    }
}

/// One entry of a segment's chunk table: where a run of
/// [`crate::PACKETS_PER_CHUNK`] packets starts and which timestamps it spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkEntry {
    /// Byte offset of the chunk's first record in the segment file.
    pub offset: u64,
    /// Smallest timestamp in the chunk, in nanoseconds.
    pub min_ts_ns: u64,
    /// Largest timestamp in the chunk, in nanoseconds.
    pub max_ts_ns: u64,
}

/// Version byte that starts an encoded chunk table.
const CHUNK_TABLE_VERSION: u8 = 1;
const CHUNK_ENTRY_BYTES: usize = 24;

/// Encodes a chunk table: a version byte, then per entry three little-endian `u64`.
pub fn encode_chunks(chunks: &[ChunkEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + chunks.len() * CHUNK_ENTRY_BYTES);
    out.push(CHUNK_TABLE_VERSION);
    for chunk in chunks {
        out.extend_from_slice(&chunk.offset.to_le_bytes());
        out.extend_from_slice(&chunk.min_ts_ns.to_le_bytes());
        out.extend_from_slice(&chunk.max_ts_ns.to_le_bytes());
    }
    out
}

/// Decodes a chunk table written by [`encode_chunks`].
pub fn decode_chunks(bytes: &[u8]) -> Result<Vec<ChunkEntry>, FormatError> {
    let Some((&version, body)) = bytes.split_first() else {
        return Err(FormatError::Damaged { what: "chunk table", reason: "empty value".into() });
    };
    if version != CHUNK_TABLE_VERSION {
        return Err(FormatError::UnsupportedVersion { found: u32::from(version) });
    }
    if body.len() % CHUNK_ENTRY_BYTES != 0 {
        return Err(FormatError::Damaged {
            what: "chunk table",
            reason: format!("length {} is not a multiple of {CHUNK_ENTRY_BYTES}", body.len()),
        });
    }
    let read_u64 = |bytes: &[u8]| u64::from_le_bytes(bytes.try_into().expect("8-byte slice"));
    Ok(body
        .chunks_exact(CHUNK_ENTRY_BYTES)
        .map(|entry| ChunkEntry {
            offset: read_u64(&entry[0..8]),
            min_ts_ns: read_u64(&entry[8..16]),
            max_ts_ns: read_u64(&entry[16..24]),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_table_round_trip() {
        let chunks = vec![
            ChunkEntry { offset: 24, min_ts_ns: 5, max_ts_ns: 9 },
            ChunkEntry { offset: 9000, min_ts_ns: 3, max_ts_ns: u64::MAX },
        ];
        assert_eq!(decode_chunks(&encode_chunks(&chunks)).unwrap(), chunks);
    }

    #[test]
    fn chunk_table_rejects_unknown_version() {
        let err = decode_chunks(&[9, 0, 0]).unwrap_err();
        assert!(matches!(err, FormatError::UnsupportedVersion { found: 9 }));
    }

    #[test]
    fn segment_meta_round_trip() {
        let meta = SegmentMeta {
            segment_id: 7,
            file_name: "1700000000.000000000-00000007.pcap".into(),
            linktype: 1,
            snaplen: 262144,
            resolution: TsResolution::Nano,
            first_ts_ns: 1,
            min_ts_ns: 1,
            max_ts_ns: 2,
            monotonic: true,
            packets: 2,
            file_bytes: 100,
            wire_bytes: 60,
            dropped: 0,
            sealed: true,
        };
        let bytes = meta.encode();
        assert!(std::str::from_utf8(&bytes).unwrap().contains("\"format\":\"1\""));
        assert_eq!(SegmentMeta::decode(&bytes).unwrap(), meta);
    }
}
