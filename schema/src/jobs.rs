//! Extraction jobs as the HTTP API stores and returns them.
//!
//! A job is stored as JSON under key `J` + its id (8 bytes, big-endian) in
//! the jobs database, `DATA_DIR/extractions/jobs.rocksdb`. The same JSON,
//! with live progress filled in, is the body of `GET /api/v1/extractions/{id}`.

use serde::{Deserialize, Serialize};

/// Magic stored under [`JOBS_FORMAT_KEY`] in the jobs database.
pub const JOBS_MAGIC: &str = "pktvault-jobs";

/// Version of the job record that this build writes and reads.
pub const JOBS_FORMAT_VERSION: u32 = 1;

/// Key of the format marker in the jobs database.
pub const JOBS_FORMAT_KEY: &[u8] = b"F";

/// Key of the next job id (8 bytes, big-endian).
pub const NEXT_JOB_ID_KEY: &[u8] = b"N";

/// Returns the key of job `id`.
pub fn job_key(id: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = b'J';
    key[1..].copy_from_slice(&id.to_be_bytes());
    key
}

/// The state of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Queued behind other jobs.
    Waiting,
    /// Queued until job outputs use less than their disk limit.
    WaitingNospace,
    Processing,
    Completed,
    Failed,
    /// Stopped on request; the files written so far are kept.
    Stopped,
}

impl JobStatus {
    /// Returns whether the job can still change by itself.
    pub fn is_active(self) -> bool {
        matches!(self, JobStatus::Waiting | JobStatus::WaitingNospace | JobStatus::Processing)
    }
}

/// The filter language of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterSyntax {
    /// pktvault's own language, a superset of n2disk's nBPF; index-accelerated.
    Nbpf,
    /// libpcap's language, matched by libpcap.
    Bpf,
}

/// One output file of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFile {
    /// 1-based number, as given to `GET /api/v1/extractions/{id}/pcap?file=N`.
    pub number: u32,
    pub name: String,
    pub packets: u64,
    pub bytes: u64,
}

/// An extraction job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExtractionJob {
    pub version: u32,
    pub id: u64,
    pub ifid: u32,
    pub begin_ns: u64,
    pub end_ns: u64,
    pub filter: String,
    pub filter_syntax: FilterSyntax,
    pub linktype: Option<u32>,
    pub status: JobStatus,
    /// The reason the job failed, was stopped, or waits.
    pub reason: Option<String>,
    pub created_ns: u64,
    pub started_ns: Option<u64>,
    pub finished_ns: Option<u64>,
    /// Fraction of the selected segments read, from 0 to 1.
    pub progress: f64,
    pub packets: u64,
    /// Bytes of the output files, pcap headers included.
    pub bytes: u64,
    pub files: Vec<JobFile>,
    /// The user who created the job, when authentication is on.
    pub user: Option<String>,
}
