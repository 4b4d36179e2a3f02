//! The OpenAPI 3.0 document of the API, served at `/api/v1/openapi.json`.
//! A unit test checks that it lists exactly the routes of [`crate::routes::ROUTES`].

use serde_json::{json, Value};

fn param(name: &str, location: &str, required: bool, description: &str, schema: Value) -> Value {
    json!({ "name": name, "in": location, "required": required, "description": description, "schema": schema })
}

fn error_response(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

fn pcap_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/vnd.tcpdump.pcap": { "schema": { "type": "string", "format": "binary" } } },
        "headers": {
            "Content-Disposition": { "schema": { "type": "string" }, "description": "attachment; filename=\"<begin>-<end>.pcap\", or the job file's name." }
        }
    })
}

fn json_ok(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

fn window_params(begin: &str, end: &str, filter: &str, location: &str) -> Vec<Value> {
    let time = json!({ "type": "string", "example": "1700000000.25" });
    vec![
        param(
            begin,
            location,
            true,
            "First packet time of the window (inclusive): epoch seconds with an optional fraction, or RFC 3339.",
            time.clone(),
        ),
        param(end, location, true, "End of the window (exclusive), in the same forms.", time),
        param(
            filter,
            location,
            false,
            "Packet filter; empty selects every packet. At most 4096 bytes.",
            json!({ "type": "string", "example": "host 192.0.2.7 and port 443" }),
        ),
        param(
            "filter_syntax",
            location,
            false,
            "nbpf: pktvault's index-accelerated language (default); bpf: libpcap's language.",
            json!({ "type": "string", "enum": ["nbpf", "bpf"], "default": "nbpf" }),
        ),
        param(
            "linktype",
            location,
            false,
            "Keep only packets of this pcap LINKTYPE, for windows that hold several.",
            json!({ "type": "integer" }),
        ),
    ]
}

fn live_operation(summary: &str, params: Vec<Value>) -> Value {
    json!({
        "summary": summary,
        "parameters": params,
        "responses": {
            "200": {
                "description": "The pcap, streamed as packets are found. A covered window without matches is a header-only pcap.",
                "content": { "application/vnd.tcpdump.pcap": { "schema": { "type": "string", "format": "binary" } } },
                "headers": {
                    "Content-Disposition": { "schema": { "type": "string" }, "description": "attachment; filename=\"<begin>-<end>.pcap\"" },
                    "X-Pktvault-Coverage-Begin": { "schema": { "type": "string" }, "description": "Start of the part of the window that recorded segments cover, epoch seconds with nine fraction digits." },
                    "X-Pktvault-Coverage-End": { "schema": { "type": "string" }, "description": "End of that part, inclusive." }
                }
            },
            "400": error_response("A parameter or the filter is not valid."),
            "401": error_response("Credentials are missing or wrong."),
            "404": error_response("The interface is unknown, or nothing was recorded in the window; the message gives the recorded range."),
            "409": error_response("The window holds several link types; choose one with linktype.")
        }
    })
}

/// Describes the same parameters as a form or JSON body of a POST.
fn request_body(params: &[Value]) -> Value {
    let mut properties = serde_json::Map::new();
    let mut required = Vec::new();
    for param in params.iter().filter(|param| param["in"] == "query") {
        let name = param["name"].as_str().expect("a parameter has a name");
        let mut property = if matches!(name, "begin" | "end" | "epoch_begin" | "epoch_end") {
            json!({ "oneOf": [param["schema"], { "type": "number" }] })
        } else {
            param["schema"].clone()
        };
        property["description"] = param["description"].clone();
        properties.insert(name.to_string(), property);
        if param["required"] == true {
            required.push(name.to_string());
        }
    }
    let schema = json!({ "type": "object", "properties": properties, "required": required });
    json!({
        "required": false,
        "description": "The query parameters may be sent as a form or a JSON object instead.",
        "content": {
            "application/x-www-form-urlencoded": { "schema": schema.clone() },
            "application/json": { "schema": schema }
        }
    })
}

/// Returns the document, with a 401 response added to every operation that
/// needs credentials and a request body to every POST that takes parameters.
pub fn document() -> Value {
    let mut document = paths_document();
    let paths = document["paths"].as_object_mut().expect("paths is an object");
    for (path, operations) in paths.iter_mut() {
        for (method, operation) in operations.as_object_mut().expect("an object of operations").iter_mut() {
            if path != "/api/v1/health" {
                operation["responses"]["401"] = error_response("Credentials are missing or wrong.");
            }
            operation["responses"]["500"] = error_response("The server failed; the server log says why.");
            let params = operation["parameters"].as_array().cloned().unwrap_or_default();
            if method == "post" && params.iter().any(|param| param["in"] == "query") {
                operation["requestBody"] = request_body(&params);
                // In a POST the body may carry the required parameters instead.
                for param in operation["parameters"].as_array_mut().expect("parameters").iter_mut() {
                    if param["in"] == "query" {
                        param["required"] = json!(false);
                    }
                }
            }
        }
    }
    document
}

fn paths_document() -> Value {
    let ifid = param("ifid", "path", true, "Interface id.", json!({ "type": "integer", "minimum": 0 }));
    let job_id = param(
        "id",
        "path",
        true,
        "Job id, as returned when the job was created.",
        json!({ "type": "integer", "minimum": 1 }),
    );
    let ntopng_params = {
        let mut params = vec![param("ifid", "query", true, "Interface id.", json!({ "type": "integer" }))];
        params.extend(window_params("epoch_begin", "epoch_end", "bpf_filter", "query"));
        params
    };
    let ntopng_live = live_operation("Live extraction with ntopng's parameter names.", ntopng_params);
    let job = json!({ "$ref": "#/components/schemas/Job" });
    let mut with_ifid = vec![ifid.clone()];
    with_ifid.extend(window_params("begin", "end", "filter", "query"));
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "pktvault API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Recorded packets as pcap: live extraction, queued extraction jobs, recorder status. Every route but /api/v1/health needs credentials once a user exists (and always off loopback): HTTP Basic, the cookie \"user=NAME; password=PASSWORD\", or Authorization: Bearer TOKEN. Errors are JSON objects with error and message."
        },
        "components": {
            "securitySchemes": {
                "basic": { "type": "http", "scheme": "basic" },
                "bearer": { "type": "http", "scheme": "bearer" },
                "cookie": { "type": "apiKey", "in": "cookie", "name": "user" }
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {
                        "error": { "type": "string", "description": "A stable code, such as invalid_filter or no_data." },
                        "message": { "type": "string", "description": "What is wrong and what is accepted." }
                    }
                },
                "Job": {
                    "type": "object",
                    "properties": {
                        "version": { "type": "integer", "description": "Version of the job record, 1." },
                        "id": { "type": "integer" },
                        "ifid": { "type": "integer" },
                        "begin_ns": { "type": "integer" },
                        "end_ns": { "type": "integer" },
                        "filter": { "type": "string" },
                        "filter_syntax": { "type": "string", "enum": ["nbpf", "bpf"] },
                        "linktype": { "type": "integer", "nullable": true },
                        "status": { "type": "string", "enum": ["waiting", "waiting_nospace", "processing", "completed", "failed", "stopped"] },
                        "reason": { "type": "string", "nullable": true },
                        "created_ns": { "type": "integer" },
                        "started_ns": { "type": "integer", "nullable": true },
                        "finished_ns": { "type": "integer", "nullable": true },
                        "progress": { "type": "number", "minimum": 0, "maximum": 1 },
                        "packets": { "type": "integer" },
                        "bytes": { "type": "integer" },
                        "files": { "type": "array", "items": { "type": "object", "properties": {
                            "number": { "type": "integer" }, "name": { "type": "string" },
                            "packets": { "type": "integer" }, "bytes": { "type": "integer" } } } },
                        "downloads": { "type": "array", "items": { "type": "string" } },
                        "user": { "type": "string", "nullable": true }
                    }
                }
            }
        },
        "security": [{ "basic": [] }, { "bearer": [] }, { "cookie": [] }],
        "paths": {
            "/api/v1/health": {
                "get": {
                    "summary": "Whether the server runs; needs no credentials.",
                    "security": [],
                    "responses": { "200": json_ok("The server runs.", json!({ "type": "object" })) }
                }
            },
            "/api/v1/openapi.json": {
                "get": { "summary": "This document.", "responses": { "200": json_ok("The OpenAPI document.", json!({ "type": "object" })), "401": error_response("Credentials are missing or wrong.") } }
            },
            "/api/v1/server": {
                "get": { "summary": "Server counters: live extractions and jobs.", "responses": { "200": json_ok("Counters.", server_counters()), "401": error_response("Credentials are missing or wrong.") } }
            },
            "/api/v1/interfaces": {
                "get": { "summary": "The recorded interfaces with their status.", "responses": { "200": json_ok("The interfaces.", json!({ "type": "object" })), "401": error_response("Credentials are missing or wrong.") } }
            },
            "/api/v1/interfaces/{ifid}/status": {
                "get": {
                    "summary": "Recorder state, counters, drops, disk use, retention window and log tail of one interface.",
                    "parameters": [ifid.clone()],
                    "responses": { "200": json_ok("The status.", json!({ "type": "object" })), "401": error_response("Credentials are missing or wrong."), "404": error_response("The interface is unknown.") }
                }
            },
            "/api/v1/interfaces/{ifid}/pcap": {
                "get": live_operation("Live extraction: the packets of a window that match a filter, as a streamed pcap.", with_ifid.clone()),
                "post": live_operation("Live extraction with the parameters in a form or JSON body.", with_ifid.clone())
            },
            "/api/v1/interfaces/{ifid}/extractions": {
                "post": {
                    "summary": "Queues an extraction job; parameters as for live extraction, in the query or a form or JSON body.",
                    "parameters": with_ifid,
                    "responses": {
                        "201": {
                            "description": "The job, waiting.",
                            "content": { "application/json": { "schema": job.clone() } },
                            "headers": { "Location": { "schema": { "type": "string" }, "description": "The job's URL." } }
                        },
                        "400": error_response("A parameter or the filter is not valid."),
                        "401": error_response("Credentials are missing or wrong."),
                        "404": error_response("The interface is unknown.")
                    }
                }
            },
            "/api/v1/extractions": {
                "get": { "summary": "All jobs.", "responses": { "200": json_ok("The jobs.", json!({ "type": "object", "properties": { "jobs": { "type": "array", "items": job.clone() } } })), "401": error_response("Credentials are missing or wrong.") } }
            },
            "/api/v1/extractions/{id}": {
                "get": {
                    "summary": "One job, with live progress while it runs.",
                    "parameters": [job_id.clone()],
                    "responses": { "200": json_ok("The job.", job.clone()), "400": error_response("The id is not a job id."), "404": error_response("No such job.") }
                },
                "delete": {
                    "summary": "Removes a job and its files, stopping it first.",
                    "parameters": [job_id.clone()],
                    "responses": { "200": json_ok("The job was removed.", json!({ "type": "object" })), "400": error_response("The id is not a job id."), "404": error_response("No such job.") }
                }
            },
            "/api/v1/extractions/{id}/stop": {
                "post": {
                    "summary": "Stops a waiting or processing job; files written so far are kept.",
                    "parameters": [job_id.clone()],
                    "responses": { "200": json_ok("The stopped job.", job), "400": error_response("The id is not a job id."), "404": error_response("No such job."), "409": error_response("The job has already finished.") }
                }
            },
            "/api/v1/extractions/{id}/pcap": {
                "get": {
                    "summary": "Downloads an output file of a completed or stopped job.",
                    "parameters": [job_id, param("file", "query", false, "File number, from 1; required when the job wrote several files.", json!({ "type": "integer", "minimum": 1 }))],
                    "responses": {
                        "200": pcap_response("The pcap file."),
                        "400": error_response("The id or file number is not valid, or file is missing for a job with several files."),
                        "404": error_response("No such job or file."),
                        "409": error_response("The job has not finished, or it failed and has no output.")
                    }
                }
            },
            "/lua/rest/v2/get/pcap/live_extraction.lua": { "get": ntopng_live.clone(), "post": ntopng_live.clone() },
            "/lua/rest/get/pcap/live_extraction.lua": { "get": ntopng_live.clone(), "post": ntopng_live }
        }
    })
}

/// Returns the schema of the answer to `GET /api/v1/server`.
fn server_counters() -> Value {
    let count = |description: &str| json!({ "type": "integer", "minimum": 0, "description": description });
    json!({
        "type": "object",
        "properties": {
            "version": { "type": "string" },
            "uptime_secs": { "type": "integer", "minimum": 0 },
            "live_extractions": {
                "type": "object",
                "description": "Requests of the pcap routes that passed authentication, since the server started.",
                "properties": {
                    "started": count("Extractions requested with GET or POST."),
                    "active": count("Extractions running now."),
                    "completed": count("Extractions whose whole pcap was sent."),
                    "cancelled_by_client": count("Extractions stopped because the client closed the connection."),
                    "rejected": count("Requests answered with a 4xx status: unknown interface, bad parameter, window without data, filter that does not parse."),
                    "failed": count("Extractions ended by a failure of the server, such as a damaged segment."),
                    "bytes_sent": count("Bytes handed to the connections; a client that left received less."),
                    "head_requests": count("HEAD requests, which extract nothing and count in no other field.")
                }
            },
            "jobs": { "type": "object" }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::routes::ROUTES;

    #[test]
    fn document_lists_exactly_the_routes() {
        let document = document();
        let mut documented = BTreeSet::new();
        for (path, operations) in document["paths"].as_object().unwrap() {
            for method in operations.as_object().unwrap().keys() {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
        let served: BTreeSet<(String, String)> =
            ROUTES.iter().map(|route| (route.method.to_string(), route.pattern.to_string())).collect();
        assert_eq!(documented, served);
    }

    #[test]
    fn path_parameters_are_declared() {
        let document = document();
        for (path, operations) in document["paths"].as_object().unwrap() {
            for (method, operation) in operations.as_object().unwrap() {
                let declared: BTreeSet<String> = operation["parameters"]
                    .as_array()
                    .map(|params| {
                        params
                            .iter()
                            .filter(|p| p["in"] == "path")
                            .map(|p| p["name"].as_str().unwrap().to_string())
                            .collect()
                    })
                    .unwrap_or_default();
                let in_path: BTreeSet<String> = path
                    .split('/')
                    .filter_map(|part| part.strip_prefix('{').and_then(|part| part.strip_suffix('}')))
                    .map(str::to_string)
                    .collect();
                assert_eq!(declared, in_path, "{method} {path}");
            }
        }
    }
}
