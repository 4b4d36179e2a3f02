//! Code shared by live extractions and jobs: filter parsing, the mapping of
//! engine errors to HTTP responses, and the recorded coverage of a window.

use pktvault_engine::extract::{ExtractError, ExtractOutcomeError, Selection};
use pktvault_engine::filter::bpf::BpfFilter;
use pktvault_engine::filter::{parse, FilterError};
use pktvault_engine::store::InterfaceStore;
use pktvault_engine::Error;
use pktvault_schema::jobs::FilterSyntax;
use pktvault_schema::time::{format_epoch_ns, TimeWindow};
use warp::http::StatusCode;

use crate::error::ApiError;
use crate::params::truncate;

/// Parses a filter; an empty filter selects every packet.
pub fn selection(filter: &str, syntax: FilterSyntax) -> Result<Selection, ApiError> {
    if filter.trim().is_empty() {
        return Ok(Selection::All);
    }
    match syntax {
        FilterSyntax::Nbpf => parse(filter).map(Selection::Native).map_err(|err| filter_error(&err)),
        FilterSyntax::Bpf => BpfFilter::new(filter).map(Selection::Bpf).map_err(engine_error),
    }
}

fn filter_error(err: &FilterError) -> ApiError {
    // Messages name the CLI flag; over HTTP the parameter takes its place.
    let advice = err.message.replace("--bpf", "filter_syntax=bpf");
    let mut message = format!("invalid filter at byte {}: {advice}", err.position);
    if err.filter.len() <= 200 {
        message.push('\n');
        message.push_str(&err.pointer());
    }
    ApiError::bad_request("invalid_filter", message)
}

/// Maps an engine error to an error response.
pub fn engine_error(err: Error) -> ApiError {
    match err {
        Error::Filter(err) => filter_error(&err),
        Error::BpfCompile { filter, linktype, message } => ApiError::bad_request(
            "invalid_filter",
            format!("libpcap rejected the filter {:?} for linktype {linktype}: {message}", truncate(&filter, 200)),
        ),
        Error::InvalidRequest(message) => ApiError::bad_request("invalid_filter", message),
        Error::NoInterface { ifid, .. } => ApiError::not_found(
            "unknown_interface",
            format!("interface {ifid} has no recorded data; GET /api/v1/interfaces lists the recorded interfaces"),
        ),
        Error::Cancelled => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "stopped", "the extraction was stopped"),
        err @ Error::Format { .. } => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "index_format", err.to_string()),
        other => ApiError::internal(other.to_string()),
    }
}

/// Returns whether `err` is an error in the request, which the client can
/// correct and [`outcome_error`] maps to a 4xx status, rather than a
/// failure of the server.
pub fn is_request_error(err: &ExtractOutcomeError) -> bool {
    match err {
        ExtractOutcomeError::Empty(_) => true,
        ExtractOutcomeError::Engine(err) => matches!(
            err,
            Error::Filter(_) | Error::BpfCompile { .. } | Error::InvalidRequest(_) | Error::NoInterface { .. }
        ),
    }
}

/// Maps the error of an extraction that wrote nothing to an error response.
pub fn outcome_error(err: ExtractOutcomeError) -> ApiError {
    match err {
        ExtractOutcomeError::Engine(err) => engine_error(err),
        ExtractOutcomeError::Empty(err @ ExtractError::NoDataInWindow { .. }) => {
            ApiError::not_found("no_data", err.to_string())
        }
        ExtractOutcomeError::Empty(err @ ExtractError::MixedLinktypes { .. }) => {
            ApiError::conflict("mixed_linktypes", err.to_string().replace("--linktype", "the linktype parameter"))
        }
        ExtractOutcomeError::Empty(err @ ExtractError::NoSuchLinktype { .. }) => {
            ApiError::not_found("no_such_linktype", err.to_string())
        }
        ExtractOutcomeError::Empty(err) => ApiError::internal(err.to_string()),
    }
}

/// The part of a window that recorded segments cover, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coverage {
    pub begin_ns: u64,
    pub end_ns: u64,
}

impl Coverage {
    /// Returns the header values `X-Pktvault-Coverage-Begin` and `-End`.
    pub fn header_values(&self) -> (String, String) {
        (format_epoch_ns(self.begin_ns), format_epoch_ns(self.end_ns))
    }
}

/// Returns the span of `window` covered by segments with packets, clipped to
/// the window; `None` when none overlaps it.
pub fn coverage(store: &InterfaceStore, window: TimeWindow, linktype: Option<u32>) -> Result<Option<Coverage>, Error> {
    let segments = store.segments()?;
    let overlapping = segments
        .iter()
        .filter(|meta| meta.packets > 0 && window.overlaps(meta.min_ts_ns, meta.max_ts_ns))
        .filter(|meta| linktype.is_none_or(|linktype| linktype == meta.linktype));
    let mut span: Option<Coverage> = None;
    for meta in overlapping {
        let begin_ns = meta.min_ts_ns.max(window.begin_ns);
        let end_ns = meta.max_ts_ns.min(window.end_ns - 1);
        span = Some(match span {
            Some(span) => Coverage { begin_ns: span.begin_ns.min(begin_ns), end_ns: span.end_ns.max(end_ns) },
            None => Coverage { begin_ns, end_ns },
        });
    }
    Ok(span)
}

/// Formats a window bound for a file name: whole seconds when it has no fraction.
pub fn file_time(ts_ns: u64) -> String {
    if ts_ns.is_multiple_of(1_000_000_000) {
        (ts_ns / 1_000_000_000).to_string()
    } else {
        format_epoch_ns(ts_ns)
    }
}
