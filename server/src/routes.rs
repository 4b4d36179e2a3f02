//! The route table and the request handlers.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use pktvault_engine::status::{interface_ids, interface_report, interface_status};
use pktvault_engine::store::interface_dir;
use pktvault_schema::jobs::ExtractionJob;
use warp::http::header::{
    HeaderValue, ALLOW, AUTHORIZATION, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, LOCATION,
};
use warp::http::{HeaderMap, Method, StatusCode};
use warp::path::FullPath;
use warp::reply::{Reply, Response};

use crate::auth::Credentials;
use crate::error::{json_response, ApiError};
use crate::jobs::status_name;
use crate::live::{live_extraction, ChunkStream};
use crate::params::{
    extraction_params, parse_ifid, parse_job_id, ExtractionParams, Params, NATIVE_NAMES, NTOPNG_NAMES,
};
use crate::AppState;

/// Largest request body accepted.
const MAX_BODY_BYTES: usize = 1 << 20;

/// The handler a route leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Health,
    OpenApi,
    Server,
    Interfaces,
    InterfaceStatus,
    LivePcap,
    NtopngLivePcap,
    CreateJob,
    ListJobs,
    GetJob,
    DeleteJob,
    StopJob,
    JobPcap,
}

/// One route: a method, a path pattern with `{name}` parts, and its action.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    pub pattern: &'static str,
    pub action: Action,
}

const fn route(method: &'static str, pattern: &'static str, action: Action) -> Route {
    Route { method, pattern, action }
}

/// Every route the server serves. The OpenAPI document lists the same ones.
pub const ROUTES: &[Route] = &[
    route("GET", "/api/v1/health", Action::Health),
    route("GET", "/api/v1/openapi.json", Action::OpenApi),
    route("GET", "/api/v1/server", Action::Server),
    route("GET", "/api/v1/interfaces", Action::Interfaces),
    route("GET", "/api/v1/interfaces/{ifid}/status", Action::InterfaceStatus),
    route("GET", "/api/v1/interfaces/{ifid}/pcap", Action::LivePcap),
    route("POST", "/api/v1/interfaces/{ifid}/pcap", Action::LivePcap),
    route("POST", "/api/v1/interfaces/{ifid}/extractions", Action::CreateJob),
    route("GET", "/api/v1/extractions", Action::ListJobs),
    route("GET", "/api/v1/extractions/{id}", Action::GetJob),
    route("DELETE", "/api/v1/extractions/{id}", Action::DeleteJob),
    route("POST", "/api/v1/extractions/{id}/stop", Action::StopJob),
    route("GET", "/api/v1/extractions/{id}/pcap", Action::JobPcap),
    route("GET", "/lua/rest/v2/get/pcap/live_extraction.lua", Action::NtopngLivePcap),
    route("POST", "/lua/rest/v2/get/pcap/live_extraction.lua", Action::NtopngLivePcap),
    route("GET", "/lua/rest/get/pcap/live_extraction.lua", Action::NtopngLivePcap),
    route("POST", "/lua/rest/get/pcap/live_extraction.lua", Action::NtopngLivePcap),
];

/// Matches `path` against `pattern`; returns the `{name}` parts in order.
fn match_pattern<'a>(pattern: &str, path: &'a str) -> Option<Vec<&'a str>> {
    let mut captures = Vec::new();
    let mut path_parts = path.split('/');
    for part in pattern.split('/') {
        let requested = path_parts.next()?;
        if part.starts_with('{') {
            if requested.is_empty() {
                return None;
            }
            captures.push(requested);
        } else if part != requested {
            return None;
        }
    }
    path_parts.next().is_none().then_some(captures)
}

/// Everything a handler needs from the request.
struct Request {
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
    body: Bytes,
    user: Option<String>,
}

impl Request {
    fn params(&self) -> Result<Params, ApiError> {
        let content_type = self.headers.get(CONTENT_TYPE).and_then(|value| value.to_str().ok());
        Params::collect(&self.query, content_type, &self.body)
    }
}

/// Handles one request and returns its response.
pub async fn handle<S, B>(
    state: Arc<AppState>,
    method: Method,
    path: FullPath,
    query: String,
    headers: HeaderMap,
    body: S,
) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let started = Instant::now();
    let path = path.as_str().to_string();
    let uri = if query.is_empty() { path.clone() } else { format!("{path}?{query}") };
    let logged_method = method.clone();
    let mut user = None;
    let result = async {
        let body = read_body(body).await?;
        let mut request = Request { method, path, query, headers, body, user: None };
        let result = dispatch(&state, &mut request).await;
        user = request.user.take();
        result
    }
    .await;
    if let Err(err) = &result {
        if err.status.is_server_error() {
            tracing::warn!(uri = %uri, code = err.code, "request failed: {}", err.message);
        }
    }
    let response = result.unwrap_or_else(ApiError::into_response);
    // One access-log line per request. A download's body streams after this,
    // so the time is the time to the response head.
    tracing::info!(
        target: "pktvault::access",
        method = %logged_method,
        uri = %uri,
        status = response.status().as_u16(),
        user = user.as_deref().unwrap_or("-"),
        head_ms = %format_args!("{:.3}", started.elapsed().as_secs_f64() * 1000.0),
        "request"
    );
    response
}

async fn read_body<S, B>(body: S) -> Result<Bytes, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let mut body = std::pin::pin!(body);
    let mut bytes = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk
            .map_err(|err| ApiError::bad_request("invalid_body", format!("cannot read the request body: {err}")))?;
        if bytes.len() + chunk.remaining() > MAX_BODY_BYTES {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the request body is over {MAX_BODY_BYTES} bytes; filters are at most 4096 bytes"),
            ));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            bytes.extend_from_slice(part);
            let len = part.len();
            chunk.advance(len);
        }
    }
    Ok(bytes.freeze())
}

async fn dispatch(state: &Arc<AppState>, request: &mut Request) -> Result<Response, ApiError> {
    let path_matches: Vec<(&Route, Vec<String>)> = ROUTES
        .iter()
        .filter_map(|route| {
            match_pattern(route.pattern, &request.path)
                .map(|captures| (route, captures.into_iter().map(str::to_string).collect()))
        })
        .collect();
    // HEAD is GET without the body, which hyper leaves out.
    let method = if request.method == Method::HEAD { "GET" } else { request.method.as_str() };
    let found = path_matches.iter().find(|(route, _)| route.method == method);
    let public = found.is_some_and(|(route, _)| route.action == Action::Health);
    if !public {
        request.user = authenticate(state, &request.headers).await?;
    }
    let Some((route, captures)) = found else {
        if path_matches.is_empty() {
            return Err(ApiError::not_found(
                "no_route",
                format!(
                    "there is no route {} {}; GET /api/v1/openapi.json lists the routes",
                    request.method,
                    crate::params::truncate(&request.path, 200)
                ),
            ));
        }
        let mut allowed: Vec<&str> = path_matches.iter().map(|(route, _)| route.method).collect();
        if allowed.contains(&"GET") {
            allowed.push("HEAD");
        }
        let mut response = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{} is not accepted on {}; accepted are {}", request.method, request.path, allowed.join(", ")),
        )
        .into_response();
        if let Ok(value) = HeaderValue::from_str(&allowed.join(", ")) {
            response.headers_mut().insert(ALLOW, value);
        }
        return Ok(response);
    };
    let capture = |index: usize| captures[index].as_str();
    match route.action {
        Action::Health => Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({
                "status": "ok",
                "version": env!("CARGO_PKG_VERSION"),
                "authentication": if state.auth.has_users() || !state.loopback { "required" } else { "disabled" },
            }),
        )),
        Action::OpenApi => Ok(json_response(StatusCode::OK, &crate::openapi::document())),
        Action::Server => server_status(state),
        Action::Interfaces => interfaces(state).await,
        Action::InterfaceStatus => {
            let ifid = known_ifid(state, capture(0))?;
            let data_dir = state.data_dir.clone();
            let status =
                blocking(move || interface_status(&data_dir, ifid).map_err(crate::extraction::engine_error)).await?;
            Ok(json_response(StatusCode::OK, &serde_json::to_value(status).expect("serializes")))
        }
        Action::LivePcap | Action::NtopngLivePcap => {
            let head_only = request.method == Method::HEAD;
            state.live.count_request(head_only);
            let ifid_in_path = (route.action == Action::LivePcap).then(|| capture(0));
            match live_request(state, request, ifid_in_path) {
                Ok((ifid, extraction)) => {
                    live_extraction(state.stores.clone(), ifid, extraction, state.live.clone(), head_only).await
                }
                Err(err) => {
                    state.live.count_rejected(head_only);
                    Err(err)
                }
            }
        }
        Action::CreateJob => {
            let ifid = known_ifid(state, capture(0))?;
            let params = request.params()?;
            params.only(&["begin", "end", "filter", "filter_syntax", "linktype"], &[])?;
            let extraction = extraction_params(&params, &NATIVE_NAMES)?;
            let jobs = Arc::clone(&state.jobs);
            let user = request.user.clone();
            let job = blocking(move || jobs.create(ifid, &extraction, user)).await?;
            let mut response = job_response(StatusCode::CREATED, &job);
            if let Ok(value) = HeaderValue::from_str(&format!("/api/v1/extractions/{}", job.id)) {
                response.headers_mut().insert(LOCATION, value);
            }
            Ok(response)
        }
        Action::ListJobs => {
            let jobs: Vec<serde_json::Value> = state.jobs.list()?.iter().map(job_value).collect();
            Ok(json_response(StatusCode::OK, &serde_json::json!({ "jobs": jobs })))
        }
        Action::GetJob => Ok(job_response(StatusCode::OK, &state.jobs.get(parse_job_id(capture(0))?)?)),
        Action::StopJob => Ok(job_response(StatusCode::OK, &state.jobs.stop(parse_job_id(capture(0))?).await?)),
        Action::DeleteJob => {
            let id = parse_job_id(capture(0))?;
            state.jobs.delete(id).await?;
            Ok(json_response(StatusCode::OK, &serde_json::json!({ "deleted": id })))
        }
        Action::JobPcap => {
            let id = parse_job_id(capture(0))?;
            let params = request.params()?;
            params.only(&["file"], &[])?;
            let number = params.optional_u32("file", "give a file number, 1 or more")?;
            let (path, file) = state.jobs.file(id, number)?;
            file_response(path, &file.name, file.bytes).await
        }
    }
}

/// Runs blocking work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| ApiError::internal(format!("a worker thread failed: {err}")))?
}

async fn authenticate(state: &Arc<AppState>, headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let has_users = state.auth.reload().map_err(|err| {
        tracing::error!("the users file cannot be read: {err}");
        ApiError::internal("the server's users file cannot be read; the server log names the problem")
    })?;
    if !has_users {
        if state.loopback {
            return Ok(None);
        }
        return Err(ApiError::unauthorized(
            "no user exists, so no credentials are accepted; add a user with 'pktvault user add NAME'",
        ));
    }
    let header = |name| headers.get(name).and_then(|value: &HeaderValue| value.to_str().ok());
    let credentials = Credentials::from_headers(header(AUTHORIZATION), header(COOKIE))?.ok_or_else(|| {
        ApiError::unauthorized(
            "credentials are required: HTTP Basic (curl -u NAME:PASSWORD), the cookie \"user=NAME; password=PASSWORD\", \
             or an API token as Authorization: Bearer TOKEN",
        )
    })?;
    let state = Arc::clone(state);
    blocking(move || state.auth.check(&credentials)).await.map(Some)
}

/// Parses an interface id and checks that the interface was recorded.
fn known_ifid(state: &AppState, text: &str) -> Result<u32, ApiError> {
    let ifid = parse_ifid("ifid", text)?;
    if interface_dir(&state.data_dir, ifid).join("index").is_dir() {
        return Ok(ifid);
    }
    // Only folders with an index count: a folder left without one, by an
    // import that failed before its first segment, has no recorded data.
    let mut known = interface_ids(&state.data_dir).unwrap_or_default();
    known.retain(|&known_ifid| interface_dir(&state.data_dir, known_ifid).join("index").is_dir());
    let listed = if known.is_empty() {
        "none is recorded yet".to_string()
    } else {
        format!("recorded are {}", known.iter().map(u32::to_string).collect::<Vec<_>>().join(", "))
    };
    Err(ApiError::not_found("unknown_interface", format!("interface {ifid} has no recorded data; {listed}")))
}

/// Reads the interface and the parameters of a live extraction: from the
/// path and the native parameters, or, without `ifid_in_path`, from
/// ntopng's parameters.
fn live_request(
    state: &AppState,
    request: &Request,
    ifid_in_path: Option<&str>,
) -> Result<(u32, ExtractionParams), ApiError> {
    let params = request.params()?;
    let (ifid, names) = match ifid_in_path {
        Some(ifid) => {
            params.only(&["begin", "end", "filter", "filter_syntax", "linktype"], &[])?;
            (known_ifid(state, ifid)?, &NATIVE_NAMES)
        }
        None => {
            params.only(
                &["ifid", "epoch_begin", "epoch_end", "bpf_filter", "filter_syntax", "linktype"],
                &["csrf", "timeline_path"],
            )?;
            let ifid = params.required("ifid", "the interface id, as listed by GET /api/v1/interfaces")?;
            (known_ifid(state, ifid)?, &NTOPNG_NAMES)
        }
    };
    Ok((ifid, extraction_params(&params, names)?))
}

async fn interfaces(state: &Arc<AppState>) -> Result<Response, ApiError> {
    let data_dir = state.data_dir.clone();
    let list = blocking(move || {
        let mut list = Vec::new();
        for ifid in interface_ids(&data_dir).map_err(crate::extraction::engine_error)? {
            if interface_dir(&data_dir, ifid).join("index").is_dir() {
                list.push(interface_report(&data_dir, ifid));
            }
        }
        Ok(list)
    })
    .await?;
    Ok(json_response(StatusCode::OK, &serde_json::json!({ "interfaces": list })))
}

fn server_status(state: &AppState) -> Result<Response, ApiError> {
    let jobs = state.jobs.list()?;
    let mut by_status = serde_json::Map::new();
    for job in &jobs {
        let entry = by_status.entry(status_name(job.status)).or_insert(serde_json::json!(0));
        *entry = serde_json::json!(entry.as_u64().unwrap_or(0) + 1);
    }
    let limits = state.jobs.limits();
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_secs": state.started.elapsed().as_secs(),
            "live_extractions": state.live.snapshot(),
            "jobs": {
                "by_status": by_status,
                "max_running": limits.max_running,
                "output_bytes": state.jobs.used_bytes(),
                "max_output_bytes": limits.max_disk_bytes,
                "max_file_bytes": limits.max_file_bytes,
            },
        }),
    ))
}

/// Returns a job as JSON, with the download URL of each output file.
fn job_value(job: &ExtractionJob) -> serde_json::Value {
    let mut value = serde_json::to_value(job).expect("a job serializes");
    let downloads: Vec<String> =
        job.files.iter().map(|file| format!("/api/v1/extractions/{}/pcap?file={}", job.id, file.number)).collect();
    value["downloads"] = serde_json::json!(downloads);
    value
}

fn job_response(status: StatusCode, job: &ExtractionJob) -> Response {
    json_response(status, &job_value(job))
}

/// Streams a job's output file.
async fn file_response(path: std::path::PathBuf, name: &str, bytes: u64) -> Result<Response, ApiError> {
    let file = std::fs::File::open(&path)
        .map_err(|err| ApiError::internal(format!("cannot open the output {}: {err}", path.display())))?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut file = file;
        loop {
            let mut buffer = vec![0u8; 64 << 10];
            match file.read(&mut buffer) {
                Ok(0) => break,
                Ok(read) => {
                    buffer.truncate(read);
                    if tx.blocking_send(Ok(Bytes::from(buffer))).is_err() {
                        break;
                    }
                }
                Err(err) => {
                    let _ = tx.blocking_send(Err(err));
                    break;
                }
            }
        }
    });
    let mut response = warp::reply::stream(ChunkStream(rx)).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/vnd.tcpdump.pcap"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(bytes));
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        headers.insert(CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_capture_their_parts() {
        assert_eq!(match_pattern("/api/v1/extractions/{id}", "/api/v1/extractions/12"), Some(vec!["12"]));
        assert_eq!(match_pattern("/api/v1/extractions/{id}", "/api/v1/extractions/"), None);
        assert_eq!(match_pattern("/api/v1/extractions/{id}", "/api/v1/extractions/1/x"), None);
        assert_eq!(
            match_pattern("/api/v1/extractions/{id}/pcap", "/api/v1/extractions/..%2F..%2Fetc/pcap"),
            Some(vec!["..%2F..%2Fetc"])
        );
    }
}
