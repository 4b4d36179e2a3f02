//! Errors of the engine.

use std::path::{Path, PathBuf};

/// Errors raised by the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or directory operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// RocksDB returned an error.
    #[error("index at {}: {}{}", path.display(), rocksdb_message(source.as_ref()), damaged_hint(path, source))]
    Index {
        path: PathBuf,
        #[source]
        source: rocksdb::Error,
    },
    /// A table file that the index lists does not exist.
    #[error("index at {}: its table file {file} is missing; {}", path.display(), rebuild_hint(path))]
    MissingTableFile { path: PathBuf, file: String },
    /// A stored value has an unknown format or is damaged.
    #[error("index at {}: {source}{}", path.display(), reimport_hint(path, source))]
    Format {
        path: PathBuf,
        #[source]
        source: pktvault_schema::FormatError,
    },
    /// No index exists for the interface.
    #[error("no recorded data for interface {ifid} in {data_dir}: run 'pktvault import' or 'pktvault record' first")]
    NoInterface { ifid: u32, data_dir: PathBuf },
    /// Another process writes the interface.
    #[error(
        "interface {ifid} in {data_dir} is being written by another process (a running 'pktvault record' or import); \
         stop it, or write to another --ifid; extraction and status work while it runs"
    )]
    Busy { ifid: u32, data_dir: PathBuf },
    /// A segment file does not match its index entry.
    #[error("segment {path} is damaged: {reason}")]
    DamagedSegment { path: PathBuf, reason: String },
    /// The filter could not be parsed.
    #[error(transparent)]
    Filter(#[from] crate::filter::FilterError),
    /// libpcap could not compile the filter.
    #[error("libpcap rejected the filter {filter:?} for linktype {linktype}: {message}")]
    BpfCompile { filter: String, linktype: u32, message: String },
    /// The request is not valid.
    #[error("{0}")]
    InvalidRequest(String),
    /// Writing the extraction output failed.
    #[error("writing the output failed: {0}")]
    Output(#[source] std::io::Error),
    /// The input file is not a capture this build reads.
    #[error("{path}: {reason}")]
    BadInput { path: PathBuf, reason: String },
    /// The extraction was cancelled by its caller.
    #[error("the extraction was stopped before it finished")]
    Cancelled,
    /// libpcap failed during live capture.
    #[error("capture on {interface}: {message}")]
    Capture { interface: String, message: String },
}

/// Returns, for an index of another format version, the command that
/// builds a new index from the interface's segment files.
fn reimport_hint(index_path: &Path, source: &pktvault_schema::FormatError) -> String {
    if !matches!(source, pktvault_schema::FormatError::UnsupportedVersion { .. }) {
        return String::new();
    }
    format!("; 'pktvault --version' names the index format a release reads. {}", import_example(index_path))
}

/// Returns RocksDB's message without the repeated status name that it
/// writes for some errors ("Corruption: Corruption: ...").
fn rocksdb_message(message: &str) -> &str {
    match message.split_once(": ") {
        Some((status, rest)) if rest.starts_with(&format!("{status}: ")) => rest,
        _ => message,
    }
}

/// Returns how to rebuild an index that RocksDB reports damaged or missing
/// a file, or an empty string for other errors.
fn damaged_hint(index_path: &Path, source: &rocksdb::Error) -> String {
    let missing_file = source.kind() == rocksdb::ErrorKind::IOError && source.to_string().contains("No such file");
    if source.kind() != rocksdb::ErrorKind::Corruption && !missing_file {
        return String::new();
    }
    format!("; {}", rebuild_hint(index_path))
}

/// Returns how to rebuild a damaged index from its segments.
fn rebuild_hint(index_path: &Path) -> String {
    format!(
        "the index is damaged, and the segments can rebuild it into a new data directory (see 'Data layout' in the README). {}",
        import_example(index_path)
    )
}

/// Returns an import command that builds a new index from the segments of `index_path`'s interface.
fn import_example(index_path: &Path) -> String {
    let Some(interface_dir) = index_path.parent() else {
        return String::new();
    };
    let ifid = interface_dir.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    format!(
        "For example: pktvault import --data-dir NEW_DIR --ifid {ifid} {}/*.pcap",
        interface_dir.join("pcap").display()
    )
}

impl Error {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { action, path, source }
    }
}

/// Result type of the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rocksdb_status_name_written_once() {
        assert_eq!(rocksdb_message("Corruption: Corruption: bad block"), "Corruption: bad block");
        assert_eq!(rocksdb_message("IO error: No such file or directory"), "IO error: No such file or directory");
    }
}
