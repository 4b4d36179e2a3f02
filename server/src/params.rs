//! Request parameters, from the query string and from a form or JSON body.

use std::collections::BTreeMap;

use bytes::Bytes;
use pktvault_schema::jobs::FilterSyntax;
use pktvault_schema::text::parse_time;
use pktvault_schema::time::TimeWindow;

use crate::error::ApiError;

/// The parameters of one request, by name.
#[derive(Debug, Default)]
pub struct Params {
    values: BTreeMap<String, String>,
}

impl Params {
    /// Collects the query string and, for a POST, the body: a JSON object
    /// (`Content-Type: application/json`) or a form.
    pub fn collect(query: &str, content_type: Option<&str>, body: &Bytes) -> Result<Params, ApiError> {
        let mut params = Params::default();
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).map_err(|err| {
            ApiError::bad_request("invalid_parameter", format!("the query string is not valid: {err}"))
        })?;
        for (name, value) in pairs {
            params.insert(name, value)?;
        }
        if body.is_empty() {
            return Ok(params);
        }
        let is_json = content_type.is_some_and(|value| value.trim_start().starts_with("application/json"));
        if is_json {
            // Values are kept as raw JSON so that a number keeps every digit
            // as written: parsed as f64, 1609829736.669007001 would lose its
            // last nanoseconds.
            let object: std::collections::HashMap<String, Box<serde_json::value::RawValue>> =
                serde_json::from_slice(body).map_err(|err| {
                    ApiError::bad_request(
                        "invalid_body",
                        format!("the JSON body is not an object of parameters: {err}"),
                    )
                })?;
            for (name, raw) in object {
                let raw = raw.get();
                let text = match raw.as_bytes().first() {
                    Some(b'"') => serde_json::from_str::<String>(raw)
                        .map_err(|err| ApiError::bad_request("invalid_body", format!("parameter {name:?}: {err}")))?,
                    Some(b'-' | b'0'..=b'9' | b't' | b'f') => raw.to_string(),
                    Some(b'n') => continue,
                    _ => {
                        return Err(ApiError::bad_request(
                            "invalid_body",
                            format!(
                                "parameter {name:?} in the JSON body is an array or object; give a string or a number"
                            ),
                        ))
                    }
                };
                params.insert(name, text)?;
            }
        } else {
            if body.first() == Some(&b'{') {
                return Err(ApiError::bad_request(
                    "invalid_body",
                    "the body looks like JSON but is not sent as JSON; set Content-Type: application/json",
                ));
            }
            let text = std::str::from_utf8(body)
                .map_err(|_| ApiError::bad_request("invalid_body", "the form body is not UTF-8"))?;
            let pairs: Vec<(String, String)> = serde_urlencoded::from_str(text)
                .map_err(|err| ApiError::bad_request("invalid_body", format!("the form body is not valid: {err}")))?;
            for (name, value) in pairs {
                params.insert(name, value)?;
            }
        }
        Ok(params)
    }

    fn insert(&mut self, name: String, value: String) -> Result<(), ApiError> {
        if self.values.contains_key(&name) {
            return Err(ApiError::bad_request("invalid_parameter", format!("parameter {name:?} is given twice")));
        }
        self.values.insert(name, value);
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Rejects parameters outside `accepted`, so that a misspelt name is not
    /// silently ignored (a dropped `filter` would return every packet).
    pub fn only(&self, accepted: &[&str], ignored: &[&str]) -> Result<(), ApiError> {
        for name in self.values.keys() {
            if !accepted.contains(&name.as_str()) && !ignored.contains(&name.as_str()) {
                return Err(ApiError::bad_request(
                    "unknown_parameter",
                    format!("unknown parameter {name:?}; accepted are {}", accepted.join(", ")),
                ));
            }
        }
        Ok(())
    }

    /// Parses an optional whole-number parameter; `accepted` tells what to give instead.
    pub fn optional_u32(&self, name: &str, accepted: &str) -> Result<Option<u32>, ApiError> {
        self.get(name)
            .map(|text| {
                text.parse::<u32>().map_err(|_| {
                    ApiError::bad_request(
                        "invalid_parameter",
                        format!("{name} {:?} is not a number; {accepted}", truncate(text, 64)),
                    )
                })
            })
            .transpose()
    }

    pub fn required(&self, name: &str, what: &str) -> Result<&str, ApiError> {
        match self.get(name) {
            Some(value) if !value.is_empty() => Ok(value),
            _ => Err(ApiError::bad_request("missing_parameter", format!("parameter {name:?} is required: {what}"))),
        }
    }
}

/// Parses an interface id given as a parameter or path segment.
pub fn parse_ifid(name: &str, text: &str) -> Result<u32, ApiError> {
    text.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_parameter",
            format!("{name} {text:?} is not an interface id; give a whole number from 0 to 4294967295"),
        )
    })
}

/// Parses a job id. Only the decimal ids the server hands out are accepted,
/// so no path-like text reaches the file system.
pub fn parse_job_id(text: &str) -> Result<u64, ApiError> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(ApiError::bad_request(
            "invalid_job_id",
            format!(
                "job id {:?} is not valid; job ids are the decimal numbers returned when a job is created",
                truncate(text, 64)
            ),
        ));
    }
    text.parse().map_err(|_| ApiError::bad_request("invalid_job_id", format!("job id {text:?} is out of range")))
}

/// The parameters of an extraction request, before the filter is parsed.
#[derive(Debug, Clone)]
pub struct ExtractionParams {
    pub window: TimeWindow,
    pub filter: String,
    pub syntax: FilterSyntax,
    pub linktype: Option<u32>,
}

/// Parameter names of an extraction request. The ntopng names are accepted
/// for scripts written against ntopng.
pub struct ExtractionNames {
    pub begin: &'static str,
    pub end: &'static str,
    pub filter: &'static str,
}

pub const NATIVE_NAMES: ExtractionNames = ExtractionNames { begin: "begin", end: "end", filter: "filter" };
pub const NTOPNG_NAMES: ExtractionNames =
    ExtractionNames { begin: "epoch_begin", end: "epoch_end", filter: "bpf_filter" };

const TIME_FORMS: &str = "epoch seconds with an optional fraction (1700000000.25) or RFC 3339 (2023-11-14T22:13:20Z)";

pub fn extraction_params(params: &Params, names: &ExtractionNames) -> Result<ExtractionParams, ApiError> {
    let time = |name: &str| -> Result<u64, ApiError> {
        let text = params.required(
            name,
            &format!("the window's {} time, as {TIME_FORMS}", if name == names.begin { "first" } else { "end" }),
        )?;
        parse_time(text).map_err(|err| ApiError::bad_request("invalid_parameter", format!("{name}: {err}")))
    };
    let begin_ns = time(names.begin)?;
    let end_ns = time(names.end)?;
    if begin_ns >= end_ns {
        return Err(ApiError::bad_request(
            "invalid_window",
            format!(
                "{} {} is not before {} {}; the window is half-open (begin <= packet time < end), so begin must be earlier than end",
                names.begin,
                params.get(names.begin).unwrap_or_default(),
                names.end,
                params.get(names.end).unwrap_or_default()
            ),
        ));
    }
    let syntax = match params.get("filter_syntax").unwrap_or("nbpf") {
        "nbpf" | "" => FilterSyntax::Nbpf,
        "bpf" => FilterSyntax::Bpf,
        other => {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                format!(
                    "filter_syntax {:?} is not known; accepted are nbpf (the default) and bpf",
                    truncate(other, 64)
                ),
            ))
        }
    };
    let linktype = params.optional_u32("linktype", "give a pcap LINKTYPE value such as 1 (Ethernet)")?;
    Ok(ExtractionParams {
        window: TimeWindow { begin_ns, end_ns },
        filter: params.get(names.filter).unwrap_or_default().to_string(),
        syntax,
        linktype,
    })
}

/// Shortens a value quoted in a message.
pub fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_string();
    }
    let mut short: String = text.chars().take(max_chars).collect();
    short.push_str("...");
    short
}
