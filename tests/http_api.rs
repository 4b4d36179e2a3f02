//! The HTTP API against the real `pktvault serve`, with reqwest, curl,
//! tcpdump and tshark as clients.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::server::{add_user, Server};
use common::{
    assert_same_packets, corpus, pktvault, pktvault_bin, read_pcap, require_tool, sort_by_time, tcpdump_select,
};
use reqwest::blocking::{Client, Response};
use serde_json::Value;

const USER: &str = "analyst";
const PASSWORD: &str = "correct horse battery";

/// The corpus capture the extraction tests use: 7451 packets over 146 s,
/// IPv4 and IPv6, timestamps out of order.
const TLS: &str = "tls_browsing_167_hosts.pcap";
const TLS_BEGIN: &str = "1609829736";
const TLS_END: &str = "1609829883";

fn client() -> Client {
    Client::builder().timeout(Duration::from_secs(120)).build().expect("HTTP client")
}

/// Creates a data directory whose interface 0 links to a shared, already imported one,
/// so each test has its own users and jobs but the import runs once.
fn data_dir_linking(shared: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    std::os::unix::fs::symlink(shared.join("0"), dir.path().join("0")).expect("link interface 0");
    dir
}

/// Returns a folder for data shared by the tests of this process. It lives
/// under cargo's per-target temporary folder, named by process id, because a
/// static is never dropped; folders of processes that have ended are removed.
fn shared_root() -> &'static Path {
    static ROOT: OnceLock<std::path::PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("http_api");
        std::fs::create_dir_all(&base).expect("create the shared test folder");
        for entry in std::fs::read_dir(&base).expect("list the shared test folder").flatten() {
            let alive = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<u32>().ok())
                .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
            if !alive {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let root = base.join(std::process::id().to_string());
        std::fs::create_dir_all(&root).expect("create the shared test folder");
        root
    })
}

/// Imports the TLS corpus capture once, as interface 0, and returns its data directory.
fn tls_data() -> &'static Path {
    static DATA: OnceLock<std::path::PathBuf> = OnceLock::new();
    DATA.get_or_init(|| {
        let dir = shared_root().join("tls");
        common::import(&dir, &[&corpus(TLS)]);
        dir
    })
}

/// Generates about 160 MB of traffic once, for tests that need an extraction
/// to take seconds, and imports it as five segments of one second of packet time.
fn large_data() -> &'static Path {
    static DATA: OnceLock<std::path::PathBuf> = OnceLock::new();
    DATA.get_or_init(|| {
        let trace = shared_root().join("trace.pcap");
        let generator = pktvault_bin().with_file_name("pktvault-gen");
        let status =
            Command::new(generator).args(["--bytes", "160M", "-w"]).arg(&trace).status().expect("run pktvault-gen");
        assert!(status.success(), "pktvault-gen failed");
        let data = shared_root().join("large");
        let output = pktvault(&[
            "import",
            "--data-dir",
            data.to_str().unwrap(),
            "--segment-seconds",
            "1",
            trace.to_str().unwrap(),
        ]);
        assert!(output.status.success(), "import failed: {}", String::from_utf8_lossy(&output.stderr));
        std::fs::remove_file(&trace).expect("remove the trace");
        data
    })
}

fn with_user(dir: &Path) {
    add_user(USER, PASSWORD, &["--data-dir", dir.to_str().unwrap()]);
}

fn get(server: &Server, path: &str) -> Response {
    client().get(server.url(path)).basic_auth(USER, Some(PASSWORD)).send().expect("GET")
}

fn json(response: Response) -> Value {
    let text = response.text().expect("body");
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("not JSON ({err}): {text}"))
}

/// Asserts a JSON error response and returns its message.
fn expect_error(response: Response, status: u16, code: &str) -> String {
    assert_eq!(response.status().as_u16(), status, "status of {}", response.url());
    let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
    assert_eq!(content_type, "application/json");
    let body = json(response);
    assert_eq!(body["error"], code, "{body}");
    let message = body["message"].as_str().expect("a message").to_string();
    assert!(!message.is_empty());
    message
}

/// Runs the CLI extraction the API must equal, byte for byte.
fn cli_extract(data_dir: &Path, begin: &str, end: &str, filter: &str, bpf: bool) -> Vec<u8> {
    let data_dir = data_dir.display().to_string();
    let mut args = vec!["extract", "--data-dir", &data_dir, "--begin", begin, "--end", end, "-w", "-"];
    if bpf {
        args.push("--bpf");
    }
    if !filter.is_empty() {
        args.push(filter);
    }
    let output = pktvault(&args);
    assert!(matches!(output.status.code(), Some(0 | 1)), "extract failed: {}", String::from_utf8_lossy(&output.stderr));
    output.stdout
}

/// Asserts a pcap response and returns its body.
fn expect_pcap(response: Response, context: &str) -> Vec<u8> {
    let status = response.status().as_u16();
    if status != 200 {
        panic!("{context}: status {status}: {}", response.text().unwrap_or_default());
    }
    assert_eq!(response.headers()["content-type"], "application/vnd.tcpdump.pcap", "{context}");
    response.bytes().expect("body").to_vec()
}

fn query(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).expect("encodes")
}

#[test]
fn live_extraction_equals_the_cli_and_tcpdump() {
    let dir = data_dir_linking(tls_data());
    with_user(dir.path());
    let server = Server::start(dir.path(), &[]);
    let original = corpus(TLS);
    for (filter, bpf) in [
        ("", false),
        ("port 443", false),
        ("host 192.168.0.17 and tcp", false),
        ("ip6", false),
        ("tcp[tcpflags] & tcp-syn != 0", true),
        ("udp", false),
    ] {
        let syntax = if bpf { "bpf" } else { "nbpf" };
        let path = format!(
            "/api/v1/interfaces/0/pcap?{}",
            query(&[("begin", TLS_BEGIN), ("end", TLS_END), ("filter", filter), ("filter_syntax", syntax)])
        );
        let response = get(&server, &path);
        assert_eq!(response.status().as_u16(), 200, "{filter}");
        let headers = response.headers().clone();
        assert_eq!(headers["content-type"], "application/vnd.tcpdump.pcap");
        assert_eq!(headers["content-disposition"], format!("attachment; filename=\"{TLS_BEGIN}-{TLS_END}.pcap\""));
        assert_eq!(headers["x-pktvault-coverage-begin"], "1609829736.669007000");
        assert_eq!(headers["x-pktvault-coverage-end"], "1609829882.471134000");
        let body = response.bytes().expect("body").to_vec();
        let cli = cli_extract(dir.path(), TLS_BEGIN, TLS_END, filter, bpf);
        assert!(body == cli, "'{filter}': the API answer differs from 'pktvault extract'");
        let expected = if filter.is_empty() {
            sort_by_time(read_pcap(&std::fs::read(&original).unwrap()).1)
        } else {
            sort_by_time(tcpdump_select(&original, filter))
        };
        assert_same_packets(&format!("API '{filter}' vs tcpdump"), &expected, &read_pcap(&body).1);
    }
}

#[test]
fn post_and_ntopng_routes_return_same_pcap() {
    let dir = data_dir_linking(tls_data());
    with_user(dir.path());
    let server = Server::start(dir.path(), &[]);
    let expected = cli_extract(dir.path(), TLS_BEGIN, "1609829800.5", "tcp port 443", false);
    let form = client()
        .post(server.url("/api/v1/interfaces/0/pcap"))
        .basic_auth(USER, Some(PASSWORD))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(query(&[("begin", TLS_BEGIN), ("end", "1609829800.5"), ("filter", "tcp port 443")]))
        .send()
        .unwrap();
    assert!(expect_pcap(form, "form POST") == expected, "form POST differs");
    let json_body = client()
        .post(server.url("/api/v1/interfaces/0/pcap"))
        .basic_auth(USER, Some(PASSWORD))
        .json(&serde_json::json!({ "begin": 1609829736, "end": "2021-01-05T06:56:40.5Z", "filter": "tcp port 443" }))
        .send()
        .unwrap();
    assert!(expect_pcap(json_body, "JSON POST") == expected, "JSON POST differs");
    // A JSON number keeps all nine fraction digits: the first packet is at
    // .669007000, so a window starting one nanosecond later leaves it out.
    let first_ns = 1_609_829_736_669_007_000u64;
    let all = read_pcap(&cli_extract(dir.path(), TLS_BEGIN, TLS_END, "", false)).1;
    let later = all.iter().filter(|packet| packet.ts_ns > first_ns && packet.ts_ns < 1_609_829_737_000_000_000).count();
    for begin in ["1609829736.669007001", "1609829736.669007000"] {
        let body = format!(r#"{{"begin": {begin}, "end": 1609829737}}"#);
        let response = client()
            .post(server.url("/api/v1/interfaces/0/pcap"))
            .basic_auth(USER, Some(PASSWORD))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap();
        let packets = read_pcap(&expect_pcap(response, begin)).1;
        let expected_count = if begin.ends_with('1') { later } else { later + 1 };
        assert_eq!(packets.len(), expected_count, "JSON number begin {begin}");
    }
    let untyped = client()
        .post(server.url("/api/v1/interfaces/0/pcap"))
        .basic_auth(USER, Some(PASSWORD))
        .body(format!(r#"{{"begin": {TLS_BEGIN}, "end": {TLS_END}}}"#))
        .send()
        .unwrap();
    let message = expect_error(untyped, 400, "invalid_body");
    assert!(message.contains("Content-Type: application/json"), "{message}");
    let cookie = format!("user={USER}; password={PASSWORD}");
    for route in ["/lua/rest/v2/get/pcap/live_extraction.lua", "/lua/rest/get/pcap/live_extraction.lua"] {
        let path = format!(
            "{route}?{}",
            query(&[
                ("ifid", "0"),
                ("epoch_begin", TLS_BEGIN),
                ("epoch_end", "1609829800.5"),
                ("bpf_filter", "tcp port 443")
            ])
        );
        let response = client().get(server.url(&path)).header("cookie", &cookie).send().unwrap();
        assert!(expect_pcap(response, route) == expected, "{route} differs");
    }
}

#[test]
fn curl_with_the_ntopng_cookie_streams_into_tshark() {
    require_tool("curl");
    require_tool("tshark");
    let dir = data_dir_linking(tls_data());
    with_user(dir.path());
    let server = Server::start(dir.path(), &[]);
    let url = server.url(&format!(
        "/lua/rest/v2/get/pcap/live_extraction.lua?{}",
        query(&[
            ("ifid", "0"),
            ("epoch_begin", TLS_BEGIN),
            ("epoch_end", TLS_END),
            ("bpf_filter", "host 192.168.0.17")
        ])
    ));
    let script = format!(
        "set -o pipefail; curl -sS --fail --cookie 'user={USER}; password={PASSWORD}' '{url}' | tshark -r - -T fields -e frame.number | wc -l"
    );
    let output = Command::new("bash").arg("-c").arg(&script).output().expect("run curl | tshark");
    assert!(output.status.success(), "curl | tshark failed: {}", String::from_utf8_lossy(&output.stderr));
    let counted: usize = String::from_utf8_lossy(&output.stdout).trim().parse().expect("a count");
    let expected = tcpdump_select(&corpus(TLS), "host 192.168.0.17").len();
    assert!(expected > 100);
    assert_eq!(counted, expected, "tshark read {counted} packets from the stream");
}

#[test]
fn serve_falls_back_to_per_request_index() {
    // The follower index keeps its own log in a folder under TMPDIR. When
    // TMPDIR is a regular file, that folder cannot be created, so the server
    // falls back to opening the index read-only for each request.
    let dir = tempfile::tempdir().expect("temporary directory");
    common::import(dir.path(), &[&corpus(TLS)]);
    let not_a_folder = dir.path().join("tmpdir-is-a-file");
    std::fs::write(&not_a_folder, b"").unwrap();
    let server = Server::start_with_env(dir.path(), &[], &[("TMPDIR", &not_a_folder)]);
    let path = format!("/api/v1/interfaces/0/pcap?begin={TLS_BEGIN}&end={TLS_END}&filter=tcp%20port%20443");
    let served = expect_pcap(get(&server, &path), "with the per-request index");
    let again = expect_pcap(get(&server, &path), "second request");
    assert_eq!(served, again);
    let stderr = server.stderr();
    assert!(stderr.contains("opening the index for each request"), "{stderr}");

    let extracted = cli_extract(dir.path(), TLS_BEGIN, TLS_END, "tcp port 443", false);
    assert!(read_pcap(&extracted).1.len() > 100, "too few packets to compare");
    assert_eq!(served, extracted, "the server's per-request index and the CLI differ");
}

#[test]
fn serve_falls_back_at_descriptor_limit() {
    // A follower keeps every table file of the index open. One-second
    // segments give the index about 90, more than a limit of 60 descriptors
    // allows. A read-only open keeps at most 10, so the server serves from
    // one per request and logs the fallback once, not at every request.
    let dir = tempfile::tempdir().expect("temporary directory");
    let table_files = common::import_one_second_segments(dir.path(), &corpus(TLS));
    assert!(table_files > 80, "only {table_files} table files");
    let server = Server::start_with_open_file_limit(dir.path(), 60);
    let path = format!("/api/v1/interfaces/0/pcap?begin={TLS_BEGIN}&end={TLS_END}&filter=tcp");
    let served = expect_pcap(get(&server, &path), "over the descriptor limit");
    for attempt in 0..2 {
        assert_eq!(expect_pcap(get(&server, &path), "again"), served, "request {attempt} after the first");
    }
    let stderr = server.stderr();
    assert!(stderr.contains("Too many open files"), "the follower opened after all: {stderr}");
    assert_eq!(stderr.matches("opening it for each request").count(), 1, "{stderr}");
    assert!(stderr.contains("raise the limit of open files"), "{stderr}");

    let extracted = cli_extract(dir.path(), TLS_BEGIN, TLS_END, "tcp", false);
    assert_eq!(read_pcap(&extracted).1.len(), 7451);
    assert_eq!(served, extracted, "the server's per-request index and the CLI differ");
}

#[test]
fn interface_list_shows_unreadable_index() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().to_str().unwrap();
    for ifid in ["0", "1"] {
        common::pktvault_expect(&["import", "--data-dir", data, "--ifid", ifid, corpus(TLS).to_str().unwrap()], 0);
    }
    common::mark_index_format(dir.path(), 1, 3);
    let server = Server::start(dir.path(), &[]);
    let list = json(get(&server, "/api/v1/interfaces"));
    let interfaces = list["interfaces"].as_array().unwrap();
    assert_eq!(interfaces.len(), 2, "{list}");
    assert_eq!(interfaces[0]["packets"], 7451);
    assert_eq!(interfaces[1]["ifid"], 1);
    let error = interfaces[1]["error"].as_str().expect("an error for interface 1");
    assert!(error.contains("index format version 3 is not supported"), "{error}");
    expect_error(get(&server, "/api/v1/interfaces/1/status"), 500, "index_format");
    let unreadable_pcap = format!("/api/v1/interfaces/1/pcap?begin={TLS_BEGIN}&end={TLS_END}");
    expect_error(get(&server, &unreadable_pcap), 500, "index_format");
    let stderr = server.stderr();
    assert!(stderr.contains("request failed: index at"), "the cause of the 500 is not logged: {stderr}");
    // The failed extraction is logged once, by its request, not again by
    // the extraction thread.
    let warnings = stderr.lines().filter(|line| line.contains("WARN")).collect::<Vec<_>>();
    assert_eq!(warnings.iter().filter(|line| line.contains("/interfaces/1/pcap")).count(), 1, "{stderr}");
    assert!(!stderr.contains("live extraction failed"), "{stderr}");
    let path = format!("/api/v1/interfaces/0/pcap?begin={TLS_BEGIN}&end={TLS_END}");
    assert_eq!(read_pcap(&expect_pcap(get(&server, &path), "interface 0")).1.len(), 7451);
}

#[test]
fn missing_table_file_is_an_error() {
    // A RocksDB follower opens an index with a table file missing at the
    // last state whose files all exist, and would serve that state's
    // packets with status 200. Each table file is removed in turn.
    let template = tempfile::tempdir().expect("temporary directory");
    common::import(template.path(), &[&corpus(TLS)]);
    let mut table_files = std::fs::read_dir(template.path().join("0").join("index"))
        .expect("index folder")
        .map(|entry| entry.expect("folder entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".sst"))
        .collect::<Vec<_>>();
    table_files.sort();
    assert!(table_files.len() >= 3, "{table_files:?}");

    let path = format!("/api/v1/interfaces/0/pcap?begin={TLS_BEGIN}&end={TLS_END}&filter=port%20443");
    for table_file in &table_files {
        let dir = tempfile::tempdir().expect("temporary directory");
        common::import(dir.path(), &[&corpus(TLS)]);
        std::fs::remove_file(dir.path().join("0").join("index").join(table_file)).expect("remove a table file");
        let server = Server::start(dir.path(), &[]);
        let message = expect_error(get(&server, &path), 500, "internal");
        assert!(message.contains(table_file), "without {table_file}: {message}");
        assert!(message.contains("the index is damaged"), "without {table_file}: {message}");
        assert!(message.contains("pktvault import --data-dir NEW_DIR --ifid 0"), "without {table_file}: {message}");
        assert!(!message.contains("Corruption: Corruption"), "without {table_file}: {message}");
    }
}

#[test]
fn imports_while_serving_are_extractable() {
    // The server keeps the index open between requests; an import made
    // after its first request must still be seen by the next one.
    let dir = tempfile::tempdir().expect("temporary directory");
    common::import(dir.path(), &[&corpus(TLS)]);
    let server = Server::start(dir.path(), &[]);
    let first = expect_pcap(
        get(&server, &format!("/api/v1/interfaces/0/pcap?begin={TLS_BEGIN}&end={TLS_END}")),
        "before the second import",
    );
    assert_eq!(read_pcap(&first).1.len(), 7451);

    let later = dir.path().join("later.pcap");
    let generator = pktvault_bin().with_file_name("pktvault-gen");
    let status = Command::new(generator)
        .args(["--seed", "3", "--packets", "2000", "--start", "1800000000", "-w"])
        .arg(&later)
        .status()
        .expect("run pktvault-gen");
    assert!(status.success(), "pktvault-gen failed");
    common::import(dir.path(), &[&later]);
    let window = query(&[("begin", "1800000000"), ("end", "1800000100"), ("filter", "tcp")]);
    let served = expect_pcap(get(&server, &format!("/api/v1/interfaces/0/pcap?{window}")), "after the second import");
    let expected = cli_extract(dir.path(), "1800000000", "1800000100", "tcp", false);
    assert!(read_pcap(&expected).1.len() > 100, "the generated traffic has TCP packets");
    assert_eq!(served, expected, "the server's answer differs from the CLI's");
    let status = json(get(&server, "/api/v1/interfaces/0/status"));
    assert_eq!(status["packets"], 7451 + 2000, "{status}");
}

#[test]
fn empty_and_uncovered_windows() {
    let dir = data_dir_linking(tls_data());
    with_user(dir.path());
    let server = Server::start(dir.path(), &[]);
    // Covered, nothing matches: a valid pcap with only the header.
    let response =
        get(&server, &format!("/api/v1/interfaces/0/pcap?begin={TLS_BEGIN}&end={TLS_END}&filter=host%20203.0.113.99"));
    assert_eq!(response.status().as_u16(), 200);
    let body = response.bytes().unwrap();
    assert_eq!(body.len(), 24);
    let (info, packets) = read_pcap(&body);
    assert_eq!((info.linktype, packets.len()), (1, 0));
    // Nothing recorded in the window: 404 naming the recorded range.
    let message =
        expect_error(get(&server, "/api/v1/interfaces/0/pcap?begin=1500000000&end=1500000060"), 404, "no_data");
    assert!(message.contains("1609829736.669007000"), "{message}");
    assert!(message.contains("1609829882.471134000"), "{message}");
    expect_error(
        get(&server, "/api/v1/interfaces/0/pcap?begin=0&end=1800000000&filter=hst%2010.0.0.1"),
        400,
        "invalid_filter",
    );
    expect_error(get(&server, "/api/v1/interfaces/7/pcap?begin=0&end=1800000000"), 404, "unknown_interface");
    expect_error(get(&server, "/api/v1/interfaces/0/pcap?begin=0"), 400, "missing_parameter");
    let stats = wait_no_live_extraction(&server, "after the answers");
    let counted = ["started", "completed", "rejected", "failed"].map(|counter| stats[counter].as_u64());
    assert_eq!(
        counted,
        [5, 1, 4, 0].map(Some),
        "the requests a client can correct are not counted as rejected: {stats}"
    );
}

#[test]
fn bad_requests_each_name_the_problem() {
    let dir = data_dir_linking(tls_data());
    with_user(dir.path());
    let server = Server::start(dir.path(), &[]);
    let live = |params: &str| get(&server, &format!("/api/v1/interfaces/0/pcap?{params}"));

    let message = expect_error(
        get(&server, &format!("/lua/rest/v2/get/pcap/live_extraction.lua?epoch_begin={TLS_BEGIN}&epoch_end={TLS_END}")),
        400,
        "missing_parameter",
    );
    assert!(message.contains("\"ifid\""), "{message}");

    let message = expect_error(get(&server, "/api/v1/interfaces/9/pcap?begin=1&end=2"), 404, "unknown_interface");
    assert!(message.contains("interface 9"), "{message}");
    assert!(message.contains("recorded are 0"), "{message}");
    // A folder without an index, as a failed first import leaves, is not listed as recorded.
    std::fs::create_dir(dir.path().join("5")).expect("create an interface folder");
    let message = expect_error(get(&server, "/api/v1/interfaces/5/pcap?begin=1&end=2"), 404, "unknown_interface");
    assert!(message.ends_with("interface 5 has no recorded data; recorded are 0"), "{message}");
    let message = expect_error(get(&server, "/api/v1/interfaces/eth0/pcap?begin=1&end=2"), 400, "invalid_parameter");
    assert!(message.contains("\"eth0\""), "{message}");

    let message = expect_error(live("begin=1609829800&end=1609829700"), 400, "invalid_window");
    assert!(message.contains("1609829800"), "{message}");
    assert!(message.contains("before"), "{message}");

    let message = expect_error(live("begin=yesterday&end=1609829700"), 400, "invalid_parameter");
    assert!(message.starts_with("begin:"), "{message}");
    assert!(message.contains("\"yesterday\""), "{message}");
    assert!(message.contains("RFC 3339"), "{message}");
    let message = expect_error(live("begin=1609829700&end=12ab"), 400, "invalid_parameter");
    assert!(message.starts_with("end:"), "{message}");
    assert!(message.contains("\"12ab\""), "{message}");

    let message = expect_error(live("end=1609829700"), 400, "missing_parameter");
    assert!(message.contains("\"begin\""), "{message}");

    // hyper rejects a URI over 64 KiB, so the 100 KB filter goes in a POST body.
    // The query string carries a 40 KB one.
    let long_filter = format!("host 192.0.2.1{}", " or host 192.0.2.1".repeat(100_000 / 18));
    assert!(long_filter.len() > 100_000);
    let message = expect_error(
        live(&query(&[("begin", TLS_BEGIN), ("end", TLS_END), ("filter", &long_filter[..40_000])])),
        400,
        "invalid_filter",
    );
    assert!(message.contains("4096"), "{message}");
    assert!(message.len() < 1000, "the message quotes the whole filter: {} bytes", message.len());
    let posted = client()
        .post(server.url("/api/v1/interfaces/0/pcap"))
        .basic_auth(USER, Some(PASSWORD))
        .json(&serde_json::json!({ "begin": TLS_BEGIN, "end": TLS_END, "filter": long_filter }))
        .send()
        .unwrap();
    assert!(expect_error(posted, 400, "invalid_filter").contains("4096"));

    let message = expect_error(
        live(&query(&[("begin", TLS_BEGIN), ("end", TLS_END), ("filter", "port (80 or")])),
        400,
        "invalid_filter",
    );
    assert!(message.contains("at byte"), "{message}");
    let message = expect_error(
        live(&query(&[
            ("begin", TLS_BEGIN),
            ("end", TLS_END),
            ("filter", "tcp[99999999999]"),
            ("filter_syntax", "bpf"),
        ])),
        400,
        "invalid_filter",
    );
    assert!(message.contains("libpcap") || message.contains("filter"), "{message}");
    let message = expect_error(
        live(&query(&[("begin", TLS_BEGIN), ("end", TLS_END), ("filter_syntax", "pcre")])),
        400,
        "invalid_parameter",
    );
    assert!(message.contains("nbpf"), "{message}");
    assert!(message.contains("bpf"), "{message}");
    let message = expect_error(
        live(&query(&[("begin", TLS_BEGIN), ("end", TLS_END), ("filtr", "port 443")])),
        400,
        "unknown_parameter",
    );
    assert!(message.contains("\"filtr\""), "{message}");
    assert!(message.contains("filter"), "{message}");

    let message = expect_error(
        live(&query(&[("begin", TLS_BEGIN), ("end", TLS_END), ("linktype", "ether")])),
        400,
        "invalid_parameter",
    );
    assert!(message.contains("linktype \"ether\""), "{message}");
    assert!(message.contains("LINKTYPE"), "{message}");
    let message = expect_error(get(&server, "/api/v1/extractions/1/pcap?file=first"), 400, "invalid_parameter");
    assert!(message.contains("file \"first\""), "{message}");

    let message = expect_error(get(&server, "/api/v1/extractions/..%2F..%2Fetc%2Fpasswd/pcap"), 400, "invalid_job_id");
    assert!(message.contains("passwd"), "{message}");
    expect_error(get(&server, "/api/v1/extractions/..%2F..%2Fetc%2Fpasswd"), 400, "invalid_job_id");
    expect_error(get(&server, "/api/v1/extractions/99"), 404, "unknown_job");
    expect_error(get(&server, "/api/v1/nothing"), 404, "no_route");
    let response = client().delete(server.url("/api/v1/interfaces")).basic_auth(USER, Some(PASSWORD)).send().unwrap();
    assert_eq!(response.headers()["allow"], "GET, HEAD");
    expect_error(response, 405, "method_not_allowed");
}

#[test]
fn credentials_are_required_once_a_user_exists() {
    let dir = data_dir_linking(tls_data());
    let config = dir.path().join("pktvault.toml");
    std::fs::write(&config, "# the API's users\n[server]\nmax_jobs = 1\n").unwrap();
    add_user(USER, PASSWORD, &["--config", config.to_str().unwrap()]);
    let server = Server::start(dir.path(), &["--config", config.to_str().unwrap()]);
    let health = client().get(server.url("/api/v1/health")).send().unwrap();
    assert_eq!(health.status().as_u16(), 200);
    assert_eq!(json(health)["authentication"], "required");

    let pcap = format!("/api/v1/interfaces/0/pcap?begin={TLS_BEGIN}&end={TLS_END}");
    let routes = [
        ("GET", "/api/v1/openapi.json"),
        ("GET", "/api/v1/server"),
        ("GET", "/api/v1/interfaces"),
        ("GET", "/api/v1/interfaces/0/status"),
        ("GET", pcap.as_str()),
        ("POST", "/api/v1/interfaces/0/extractions"),
        ("GET", "/api/v1/extractions"),
        ("GET", "/api/v1/extractions/1"),
        ("DELETE", "/api/v1/extractions/1"),
        ("GET", "/lua/rest/v2/get/pcap/live_extraction.lua?ifid=0"),
    ];
    for (method, path) in routes {
        let request = client().request(method.parse().unwrap(), server.url(path));
        let response = request.send().unwrap();
        assert_eq!(response.headers()["www-authenticate"], "Basic realm=\"pktvault\"", "{method} {path}");
        let message = expect_error(response, 401, "unauthorized");
        assert!(message.contains("Basic"), "{message}");
        assert!(message.contains("Bearer"), "{message}");
    }
    let wrong = client().get(server.url("/api/v1/interfaces")).basic_auth(USER, Some("wrong password")).send().unwrap();
    expect_error(wrong, 401, "unauthorized");
    let wrong_cookie = client()
        .get(server.url("/api/v1/interfaces"))
        .header("cookie", format!("user={USER}; password=nope"))
        .send()
        .unwrap();
    expect_error(wrong_cookie, 401, "unauthorized");
    let unknown = client().get(server.url("/api/v1/interfaces")).basic_auth("mallory", Some(PASSWORD)).send().unwrap();
    expect_error(unknown, 401, "unauthorized");

    // Basic, the ntopng cookie and a token created while the server runs all work.
    assert_eq!(get(&server, "/api/v1/interfaces").status().as_u16(), 200);
    let cookie = client()
        .get(server.url("/api/v1/interfaces"))
        .header("cookie", format!("user={USER}; password={PASSWORD}"))
        .send()
        .unwrap();
    assert_eq!(cookie.status().as_u16(), 200);
    let output = Command::new(pktvault_bin())
        .args(["user", "token", USER, "--config", config.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let token = String::from_utf8(output.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("pvt_"));
    let bearer = client().get(server.url("/api/v1/interfaces")).bearer_auth(&token).send().unwrap();
    assert_eq!(bearer.status().as_u16(), 200);
    let bad_token = client().get(server.url("/api/v1/interfaces")).bearer_auth("pvt_forged").send().unwrap();
    expect_error(bad_token, 401, "unauthorized");
    let head = client().head(server.url("/api/v1/health")).send().unwrap();
    assert_eq!(head.status().as_u16(), 200);

    // Removing a user revokes its tokens at once; another user keeps the API closed.
    add_user("second", PASSWORD, &["--config", config.to_str().unwrap()]);
    let output = Command::new(pktvault_bin())
        .args(["user", "remove", USER, "--config", config.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let revoked = client().get(server.url("/api/v1/interfaces")).bearer_auth(&token).send().unwrap();
    expect_error(revoked, 401, "unauthorized");
    let removed = client().get(server.url("/api/v1/interfaces")).basic_auth(USER, Some(PASSWORD)).send().unwrap();
    expect_error(removed, 401, "unauthorized");
    let config_text = std::fs::read_to_string(&config).unwrap();
    assert!(
        config_text.starts_with("# the API's users\n[server]"),
        "the configuration file was rewritten: {config_text}"
    );
    assert!(!config_text.contains(&token), "a secret is stored in clear");
    assert!(!config_text.contains(PASSWORD), "a secret is stored in clear");
}

#[test]
fn off_loopback_auth_survives_user_removal() {
    require_tool("curl");
    let dir = data_dir_linking(tls_data());
    with_user(dir.path());
    // A network namespace of this test, with a documentation address on a
    // veth pair inside it, gives the server an address that is not loopback.
    let namespace = format!("pktvault-test-{}", std::process::id());
    let ip = |args: &[&str]| {
        let output = Command::new("ip").args(args).output().expect("run ip");
        assert!(output.status.success(), "ip {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    };
    ip(&["netns", "add", &namespace]);
    struct Namespace(String);
    impl Drop for Namespace {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "delete", &self.0]).status();
        }
    }
    let _namespace = Namespace(namespace.clone());
    ip(&["-n", &namespace, "link", "set", "lo", "up"]);
    ip(&["-n", &namespace, "link", "add", "pv0", "type", "veth", "peer", "name", "pv1"]);
    ip(&["-n", &namespace, "addr", "add", "192.0.2.1/24", "dev", "pv0"]);
    ip(&["-n", &namespace, "link", "set", "pv0", "up"]);
    ip(&["-n", &namespace, "link", "set", "pv1", "up"]);
    let mut server = Command::new("ip")
        .args(["netns", "exec", &namespace])
        .arg(pktvault_bin())
        .args(["serve", "--data-dir", dir.path().to_str().unwrap(), "--listen", "192.0.2.1:3000"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start pktvault serve in the namespace");
    let curl = |credentials: bool| -> String {
        let mut args = vec!["netns", "exec", &namespace, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}"];
        let user = format!("{USER}:{PASSWORD}");
        if credentials {
            args.extend(["-u", user.as_str()]);
        }
        args.push("http://192.0.2.1:3000/api/v1/interfaces");
        let output = Command::new("ip").args(&args).output().expect("run curl in the namespace");
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while curl(true) != "200" {
        assert!(Instant::now() < deadline, "the server in the namespace did not answer 200");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(curl(false), "401");
    std::fs::remove_file(dir.path().join("users.toml")).expect("remove the users file");
    assert_eq!(curl(false), "401", "removing every user turned authentication off on a non-loopback address");
    assert_eq!(curl(true), "401");
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn serve_refuses_a_non_loopback_address_without_users() {
    let dir = data_dir_linking(tls_data());
    // 192.0.2.1 is a documentation address: the server refuses before binding it.
    let output = pktvault(&["serve", "--data-dir", dir.path().to_str().unwrap(), "--listen", "192.0.2.1:3000"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("refusing to listen on 192.0.2.1:3000"), "{stderr}");
    assert!(stderr.contains("pktvault user add"), "{stderr}");
}

/// Sends SIGTERM to the server's process.
fn terminate(server: &Server) {
    let pid = libc::pid_t::try_from(server.child.id()).expect("pid fits in pid_t");
    // SAFETY: kill(2) with the pid of a child this test started and has not reaped yet.
    let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(sent, 0, "kill({pid}, SIGTERM) failed: {}", std::io::Error::last_os_error());
}

/// Waits up to 30 s for the server's process to exit and returns its status.
fn wait_for_exit(server: &mut Server) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = server.child.try_wait().expect("poll pktvault serve") {
            return status;
        }
        assert!(Instant::now() < deadline, "pktvault serve did not stop within 30 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_logs_its_stop_on_sigterm() {
    let dir = data_dir_linking(tls_data());
    let mut server = Server::start(dir.path(), &[]);
    terminate(&server);
    let status = wait_for_exit(&mut server);
    assert!(status.success(), "pktvault serve exited with {status}");
    let stderr = server.stderr();
    assert!(stderr.contains("SIGTERM received; stopping"), "{stderr}");
    assert!(stderr.contains("stopped"), "{stderr}");
}

#[test]
fn serve_stop_logs_cut_downloads() {
    let dir = data_dir_linking(large_data());
    with_user(dir.path());
    let mut server = Server::start(dir.path(), &[]);
    let path = "/api/v1/interfaces/0/pcap?begin=0&end=1800000000";
    let [mut stalled, mut leaving] = [open_stream(&server, path), open_stream(&server, path)];
    let mut first = vec![0u8; 1024];
    for stream in [&mut stalled, &mut leaving] {
        stream.read_exact(&mut first).expect("the first KB");
        assert!(first.starts_with(b"HTTP/1.1 200"));
    }
    terminate(&server);

    // A client that leaves within the 5 s the server gives open downloads.
    std::thread::sleep(Duration::from_secs(1));
    close_with_reset(leaving);
    wait_for_exit(&mut server);
    drop(stalled);
    let stderr = server.stderr();
    assert!(stderr.contains("stopped with downloads still open"), "{stderr}");
    assert_eq!(stderr.matches("live extraction stopped: the server is stopping").count(), 1, "{stderr}");
    assert_eq!(stderr.matches("live extraction stopped: the client closed the connection").count(), 1, "{stderr}");
}

#[test]
fn access_log_names_each_request() {
    let dir = data_dir_linking(tls_data());
    with_user(dir.path());
    let server = Server::start(dir.path(), &[]);
    assert_eq!(get(&server, "/api/v1/interfaces?verbose=1").status(), 200);
    let wrong = client().get(server.url("/api/v1/interfaces")).basic_auth(USER, Some("wrong password")).send().unwrap();
    assert_eq!(wrong.status(), 401);
    let deadline = Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let stderr = server.stderr();
        let lines: Vec<String> =
            stderr.lines().filter(|line| line.contains("pktvault::access")).map(String::from).collect();
        if lines.len() >= 2 || Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].contains("method=GET"), "{}", lines[0]);
    assert!(lines[0].contains("uri=/api/v1/interfaces?verbose=1"), "{}", lines[0]);
    assert!(lines[0].contains("status=200"), "{}", lines[0]);
    assert!(lines[0].contains(&format!("user=\"{USER}\"")), "{}", lines[0]);
    assert!(lines[1].contains("status=401"), "{}", lines[1]);
    assert!(lines[1].contains("user=\"-\""), "{}", lines[1]);
    assert!(!lines[1].contains("wrong password"), "{}", lines[1]);
}

#[test]
fn interfaces_status_and_health() {
    let dir = data_dir_linking(tls_data());
    with_user(dir.path());
    let server = Server::start(dir.path(), &[]);
    let list = json(get(&server, "/api/v1/interfaces"));
    let interfaces = list["interfaces"].as_array().unwrap();
    assert_eq!(interfaces.len(), 1);
    assert_eq!(interfaces[0]["ifid"], 0);
    assert_eq!(interfaces[0]["packets"], 7451);
    let status = json(get(&server, "/api/v1/interfaces/0/status"));
    assert_eq!(status["first_packet_ns"], 1_609_829_736_669_007_000u64);
    assert_eq!(status["last_packet_ns"], 1_609_829_882_471_134_000u64);
    assert!(status["disk_bytes"].as_u64().unwrap() > 2_000_000);
    assert!(status["recorder"].is_null());
    expect_error(get(&server, "/api/v1/interfaces/3/status"), 404, "unknown_interface");
}

/// Waits until `done` holds for the job, and returns the job.
fn wait_job(server: &Server, id: u64, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let job = json(get(server, &format!("/api/v1/extractions/{id}")));
        if done(&job) {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id} did not reach the expected state: {job}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn is_finished(job: &Value) -> bool {
    matches!(job["status"].as_str(), Some("completed" | "failed" | "stopped"))
}

fn create_job(server: &Server, params: &[(&str, &str)]) -> u64 {
    let response = client()
        .post(server.url("/api/v1/interfaces/0/extractions"))
        .basic_auth(USER, Some(PASSWORD))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(query(params))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let job = json(response);
    let id = job["id"].as_u64().unwrap();
    assert_eq!(location, format!("/api/v1/extractions/{id}"));
    id
}

fn download(server: &Server, id: u64, file: u32) -> Vec<u8> {
    let response = get(server, &format!("/api/v1/extractions/{id}/pcap?file={file}"));
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "application/vnd.tcpdump.pcap");
    response.bytes().unwrap().to_vec()
}

#[test]
fn job_lifecycle_with_split_files() {
    let dir = data_dir_linking(tls_data());
    with_user(dir.path());
    let server = Server::start(dir.path(), &["--job-file-size", "256K"]);
    let id = create_job(&server, &[("begin", TLS_BEGIN), ("end", TLS_END), ("filter", "tcp port 443")]);
    let job = wait_job(&server, id, is_finished);
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["progress"], 1.0);
    assert_eq!(job["user"], USER);
    let files = job["files"].as_array().unwrap();
    assert!(files.len() > 3, "256K files should split the output: {job}");

    let expected = cli_extract(dir.path(), TLS_BEGIN, TLS_END, "tcp port 443", false);
    let (expected_info, expected_packets) = read_pcap(&expected);
    let mut packets = Vec::new();
    for file in files {
        let number = file["number"].as_u64().unwrap() as u32;
        let bytes = download(&server, id, number);
        assert_eq!(bytes.len() as u64, file["bytes"].as_u64().unwrap());
        assert!(bytes.len() <= 256 << 10 || file["packets"] == 1, "file {number} is over the limit");
        let (info, part) = read_pcap(&bytes);
        assert_eq!(info, expected_info);
        assert_eq!(part.len() as u64, file["packets"].as_u64().unwrap());
        packets.extend(part);
    }
    assert_same_packets("job files joined vs CLI", &expected_packets, &packets);
    assert_eq!(job["packets"].as_u64().unwrap(), expected_packets.len() as u64);

    let message = expect_error(get(&server, &format!("/api/v1/extractions/{id}/pcap")), 400, "missing_parameter");
    assert!(message.contains(&format!("file=1 to file={}", files.len())), "{message}");
    expect_error(get(&server, &format!("/api/v1/extractions/{id}/pcap?file=999")), 404, "no_such_file");
    let listed = json(get(&server, "/api/v1/extractions"));
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 1);
    let stop = client()
        .post(server.url(&format!("/api/v1/extractions/{id}/stop")))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .unwrap();
    expect_error(stop, 409, "job_finished");

    let job_dir = dir.path().join("extractions").join(id.to_string());
    assert!(job_dir.is_dir());
    let deleted = client()
        .delete(server.url(&format!("/api/v1/extractions/{id}")))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 200);
    assert!(!job_dir.exists(), "delete left {}", job_dir.display());
    expect_error(get(&server, &format!("/api/v1/extractions/{id}")), 404, "unknown_job");
    assert!(json(get(&server, "/api/v1/extractions"))["jobs"].as_array().unwrap().is_empty());
}

#[test]
fn job_without_data_fails_with_reason() {
    let dir = data_dir_linking(tls_data());
    with_user(dir.path());
    let server = Server::start(dir.path(), &[]);
    let id = create_job(&server, &[("begin", "1500000000"), ("end", "1500000060")]);
    let job = wait_job(&server, id, is_finished);
    assert_eq!(job["status"], "failed");
    assert!(job["reason"].as_str().unwrap().contains("1609829736.669007000"), "{job}");
    let message = expect_error(get(&server, &format!("/api/v1/extractions/{id}/pcap")), 409, "job_failed");
    assert!(message.contains("1609829736.669007000"), "{message}");
    let bad = client()
        .post(server.url("/api/v1/interfaces/0/extractions"))
        .basic_auth(USER, Some(PASSWORD))
        .form(&[("begin", TLS_BEGIN), ("end", TLS_END), ("filter", "hst 10.0.0.1")])
        .send()
        .unwrap();
    expect_error(bad, 400, "invalid_filter");
    // A libpcap filter is compiled for the interface's link types before the job is queued.
    let bad_bpf = client()
        .post(server.url("/api/v1/interfaces/0/extractions"))
        .basic_auth(USER, Some(PASSWORD))
        .form(&[("begin", TLS_BEGIN), ("end", TLS_END), ("filter", "tcp["), ("filter_syntax", "bpf")])
        .send()
        .unwrap();
    let message = expect_error(bad_bpf, 400, "invalid_filter");
    assert!(message.contains("libpcap"), "{message}");
    assert!(json(get(&server, "/api/v1/extractions"))["jobs"].as_array().unwrap().len() == 1);
}

#[test]
fn stopping_a_processing_job_keeps_valid_files() {
    let dir = data_dir_linking(large_data());
    with_user(dir.path());
    let server = Server::start(dir.path(), &["--job-file-size", "8M"]);
    let id = create_job(&server, &[("begin", "0"), ("end", "1800000000")]);
    wait_job(&server, id, |job| job["status"] == "processing" && job["packets"].as_u64().unwrap() > 0);
    let response = client()
        .post(server.url(&format!("/api/v1/extractions/{id}/stop")))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let job = json(response);
    assert_eq!(job["status"], "stopped", "{job}");
    assert!(job["progress"].as_f64().unwrap() < 1.0, "{job}");
    let files = job["files"].as_array().unwrap();
    assert!(!files.is_empty());
    let mut total = 0;
    let mut last_ts = 0;
    for file in files {
        let bytes = download(&server, id, file["number"].as_u64().unwrap() as u32);
        let (_, packets) = read_pcap(&bytes);
        assert_eq!(packets.len() as u64, file["packets"].as_u64().unwrap());
        assert!(packets.first().is_none_or(|packet| packet.ts_ns >= last_ts));
        last_ts = packets.last().map_or(last_ts, |packet| packet.ts_ns);
        total += packets.len() as u64;
    }
    assert_eq!(total, job["packets"].as_u64().unwrap());
    let status = json(get(&server, "/api/v1/interfaces/0/status"));
    assert!(total < status["packets"].as_u64().unwrap(), "the job was not stopped early");
}

#[test]
fn jobs_survive_server_restart() {
    let dir = data_dir_linking(large_data());
    with_user(dir.path());
    let server = Server::start(dir.path(), &["--max-jobs", "1"]);
    let running = create_job(&server, &[("begin", "0"), ("end", "1800000000")]);
    let queued = create_job(&server, &[("begin", "0"), ("end", "1800000000"), ("filter", "icmp")]);
    wait_job(&server, running, |job| job["status"] == "processing");
    let waiting = json(get(&server, &format!("/api/v1/extractions/{queued}")));
    assert_eq!(waiting["status"], "waiting", "{waiting}");
    assert!(waiting["reason"].as_str().unwrap().contains("--max-jobs"), "{waiting}");
    server.kill();

    let server = Server::start(dir.path(), &["--max-jobs", "1"]);
    let failed = json(get(&server, &format!("/api/v1/extractions/{running}")));
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(failed["reason"].as_str().unwrap().contains("server stopped"), "{failed}");
    assert!(failed["files"].as_array().unwrap().is_empty());
    assert!(!dir.path().join("extractions").join(running.to_string()).exists(), "partial files were kept");
    let done = wait_job(&server, queued, is_finished);
    assert_eq!(done["status"], "completed", "{done}");
    let expected = cli_extract(dir.path(), "0", "1800000000", "icmp", false);
    assert!(download(&server, queued, 1) == expected, "the resumed job differs from the CLI");
}

#[test]
fn job_waits_for_space_until_deleted() {
    let dir = data_dir_linking(tls_data());
    with_user(dir.path());
    let server = Server::start(dir.path(), &[]);
    let first = create_job(&server, &[("begin", TLS_BEGIN), ("end", TLS_END)]);
    assert_eq!(wait_job(&server, first, is_finished)["status"], "completed");
    drop(server);

    // The same jobs with a smaller limit: the first job's output fills it.
    let server = Server::start(dir.path(), &["--job-disk", "1M"]);
    assert_eq!(json(get(&server, &format!("/api/v1/extractions/{first}")))["status"], "completed");
    let second = create_job(&server, &[("begin", TLS_BEGIN), ("end", TLS_END), ("filter", "udp")]);
    let job = wait_job(&server, second, |job| job["status"] == "waiting_nospace");
    assert!(job["reason"].as_str().unwrap().contains("--job-disk"), "{job}");
    let deleted = client()
        .delete(server.url(&format!("/api/v1/extractions/{first}")))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 200);
    assert_eq!(wait_job(&server, second, is_finished)["status"], "completed");

    // A job whose output would pass the limit fails, and its reason names the limit.
    let third = create_job(&server, &[("begin", TLS_BEGIN), ("end", TLS_END)]);
    let job = wait_job(&server, third, is_finished);
    assert_eq!(job["status"], "failed", "{job}");
    assert!(job["reason"].as_str().unwrap().contains("--job-disk"), "{job}");
    let stderr = server.stderr();
    let logged = stderr.lines().find(|line| line.contains("extraction job failed")).unwrap_or_default();
    assert!(logged.contains(&format!("job={third}")), "the failure is not logged with its job id: {stderr}");
    assert!(logged.contains("--job-disk"), "the logged failure has no reason: {stderr}");
}

fn server_stats(server: &Server) -> Value {
    json(get(server, "/api/v1/server"))["live_extractions"].clone()
}

/// Waits up to 30 s until no live extraction runs and returns the counters.
fn wait_no_live_extraction(server: &Server, context: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = server_stats(server);
        if stats["active"] == 0 {
            return stats;
        }
        assert!(Instant::now() < deadline, "the extraction went on {context}: {stats}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Closes `stream` with a reset, as a client that is killed does.
fn close_with_reset(stream: TcpStream) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: the descriptor is the open socket of `stream`, and `linger`
    // is a valid option value of the size passed.
    let set = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&stream),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(set, 0, "setsockopt SO_LINGER");
}

/// Opens a connection and sends a live-extraction request on it, leaving the
/// response unread.
fn open_stream(server: &Server, path: &str) -> TcpStream {
    let addr = server.base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).expect("connect");
    let credentials = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    };
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {credentials}\r\n\r\n").unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    stream
}

#[test]
fn disconnecting_client_stops_extraction() {
    let dir = data_dir_linking(large_data());
    with_user(dir.path());
    let server = Server::start(dir.path(), &[]);
    let mut stream = open_stream(&server, "/api/v1/interfaces/0/pcap?begin=0&end=1800000000");
    let mut first = vec![0u8; 1024];
    stream.read_exact(&mut first).expect("the first KB");
    assert!(first.starts_with(b"HTTP/1.1 200"));
    // The first bytes arrive while the extraction still runs.
    assert_eq!(server_stats(&server)["active"], 1);
    close_with_reset(stream);
    let stats = wait_no_live_extraction(&server, "after the client left");
    assert_eq!(stats["cancelled_by_client"], 1, "{stats}");
    let total = json(get(&server, "/api/v1/interfaces/0/status"))["disk_bytes"].as_u64().unwrap();
    let sent = stats["bytes_sent"].as_u64().unwrap();
    assert!(sent < total / 4, "{sent} of about {total} bytes were produced for a client that read 1 KB");
    let stderr = server.stderr();
    assert!(stderr.contains("live extraction stopped: the client closed the connection"), "{stderr}");
    assert!(!stderr.contains("ERROR"), "a client that went away is logged as an error: {stderr}");
}

#[test]
fn head_request_stops_after_headers() {
    let dir = data_dir_linking(large_data());
    with_user(dir.path());
    let server = Server::start(dir.path(), &[]);
    let path = "/api/v1/interfaces/0/pcap?begin=0&end=1800000000";
    let head = client().head(server.url(path)).basic_auth(USER, Some(PASSWORD)).send().unwrap();
    assert_eq!(head.status().as_u16(), 200);
    assert_eq!(head.headers()["content-type"], "application/vnd.tcpdump.pcap");
    assert!(head.headers().contains_key("x-pktvault-coverage-begin"), "{:?}", head.headers());
    let unknown = "/api/v1/interfaces/7/pcap?begin=0&end=1800000000";
    let head = client().head(server.url(unknown)).basic_auth(USER, Some(PASSWORD)).send().unwrap();
    assert_eq!(head.status().as_u16(), 404);
    let stats = wait_no_live_extraction(&server, "after the HEAD responses");
    assert_eq!(stats["head_requests"], 2, "{stats}");
    for counter in ["started", "completed", "cancelled_by_client", "rejected", "failed"] {
        assert_eq!(stats[counter], 0, "a HEAD request counted as an extraction: {stats}");
    }
    assert_eq!(stats["bytes_sent"], 0, "bytes were produced for a HEAD request: {stats}");
    let stderr = server.stderr();
    assert!(!stderr.contains("live extraction stopped"), "a HEAD request is logged as a client that left: {stderr}");
}

#[test]
fn slow_reader_keeps_server_memory_flat() {
    let dir = data_dir_linking(large_data());
    with_user(dir.path());
    let server = Server::start(dir.path(), &[]);
    let before = server.rss_kib();
    let mut stream = open_stream(&server, "/api/v1/interfaces/0/pcap?begin=0&end=1800000000");
    let mut buffer = vec![0u8; 16 << 10];
    let mut peak = before;
    let mut received = 0usize;
    // About 3 MB/s for 3 seconds, against an extraction of 160 MB.
    for round in 0..150 {
        received += stream.read(&mut buffer).expect("read");
        std::thread::sleep(Duration::from_millis(5));
        if round % 10 == 0 {
            peak = peak.max(server.rss_kib());
        }
    }
    assert!(received > 0);
    assert_eq!(server_stats(&server)["active"], 1, "the extraction should still be waiting for this reader");
    let growth_mib = peak.saturating_sub(before) / 1024;
    assert!(growth_mib < 64, "server memory grew by {growth_mib} MiB for a slow reader");
}

#[test]
fn openapi_document_matches_served_routes() {
    let dir = data_dir_linking(tls_data());
    with_user(dir.path());
    let server = Server::start(dir.path(), &[]);
    let document = json(get(&server, "/api/v1/openapi.json"));
    assert_eq!(document["openapi"], "3.0.3");
    let job = create_job(&server, &[("begin", TLS_BEGIN), ("end", "1609829740"), ("filter", "tcp")]);
    wait_job(&server, job, is_finished);
    let mut walked = BTreeSet::new();
    let mut operations: Vec<(String, String, Value)> = Vec::new();
    for (path, methods) in document["paths"].as_object().unwrap() {
        for (method, operation) in methods.as_object().unwrap() {
            operations.push((method.to_uppercase(), path.clone(), operation.clone()));
        }
    }
    // Deleting last keeps the job for the other operations.
    operations.sort_by_key(|(method, ..)| method == "DELETE");
    for (method, path, operation) in operations {
        let concrete = path.replace("{ifid}", "0").replace("{id}", &job.to_string());
        let mut params: Vec<(String, String)> = Vec::new();
        let body_required: Vec<Value> = operation["requestBody"]["content"]["application/x-www-form-urlencoded"]
            ["schema"]["required"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for param in operation["parameters"].as_array().into_iter().flatten() {
            let required = param["required"] == true || body_required.contains(&param["name"]);
            if param["in"] != "query" || !required {
                continue;
            }
            let name = param["name"].as_str().unwrap();
            let value = match name {
                "begin" | "epoch_begin" => TLS_BEGIN,
                "end" | "epoch_end" => "1609829740",
                "ifid" => "0",
                other => panic!("no test value for required parameter {other} of {method} {path}"),
            };
            params.push((name.to_string(), value.to_string()));
        }
        if path.ends_with("/pcap") && path.contains("extractions") {
            params.push(("file".into(), "1".into()));
        }
        let url = format!("{}?{}", server.url(&concrete), serde_urlencoded::to_string(&params).unwrap());
        let response =
            client().request(method.parse().unwrap(), &url).basic_auth(USER, Some(PASSWORD)).send().expect("request");
        let status = response.status().as_u16().to_string();
        let documented: Vec<&String> = operation["responses"].as_object().unwrap().keys().collect();
        assert!(documented.contains(&&status), "{method} {path} answered {status}, documented are {documented:?}");
        walked.insert((method, path));
    }
    assert!(walked.len() >= 17, "only {} operations were walked", walked.len());
}

/// Reads a response until the server closes the connection, and returns its
/// body: the chunks received whole, without the ones the break cut.
fn read_chunked_until_close(mut stream: TcpStream) -> Vec<u8> {
    let mut raw = Vec::new();
    let mut buffer = [0u8; 64 << 10];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => raw.extend_from_slice(&buffer[..read]),
        }
    }
    let head_end = raw.windows(4).position(|window| window == b"\r\n\r\n").expect("response headers") + 4;
    let head = String::from_utf8_lossy(&raw[..head_end]).to_lowercase();
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    let mut rest = &raw[head_end..];
    let mut body = Vec::new();
    while let Some(line_end) = rest.windows(2).position(|window| window == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap().trim(), 16).unwrap();
        let data = &rest[line_end + 2..];
        if size == 0 || data.len() < size + 2 {
            break;
        }
        body.extend_from_slice(&data[..size]);
        rest = &data[size + 2..];
    }
    body
}

/// A segment file cut short in the middle of the window: the response
/// carries a prefix of what the CLI writes to standard output before it
/// fails, then breaks instead of ending as a complete pcap. hyper may drop
/// the chunks still in its write buffer when the body fails, so the prefix
/// can be shorter than the CLI's output.
#[test]
fn truncated_segment_body_keeps_whole_records() {
    let dir = tempfile::tempdir().expect("temp dir");
    let segments = common::import_one_second_segments(dir.path(), &corpus(TLS));
    assert!(segments >= 3, "{segments} table files; the case needs several segments");
    let pcap_dir = dir.path().join("0").join("pcap");
    let mut files: Vec<_> = std::fs::read_dir(&pcap_dir).unwrap().map(|entry| entry.unwrap().path()).collect();
    files.sort();
    let cut = &files[files.len() / 2];
    let size = std::fs::metadata(cut).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(cut).unwrap().set_len(size / 2).unwrap();

    let data = dir.path().to_str().unwrap();
    let cli = pktvault(&["extract", "--data-dir", data, "--begin", TLS_BEGIN, "--end", TLS_END, "-w", "-"]);
    assert_eq!(cli.status.code(), Some(2), "{}", String::from_utf8_lossy(&cli.stderr));
    let (_, cli_packets) = common::read_pcap(&cli.stdout);
    assert!(!cli_packets.is_empty(), "the CLI wrote no packet before the cut");

    with_user(dir.path());
    let server = Server::start(dir.path(), &[]);
    let stream = open_stream(&server, &format!("/api/v1/interfaces/0/pcap?begin={TLS_BEGIN}&end={TLS_END}"));
    let body = read_chunked_until_close(stream);
    assert!(body.len() >= 24, "the body has no pcap header");
    assert!(body.len() <= cli.stdout.len(), "the body is longer than the CLI's output");
    assert!(cli.stdout.starts_with(&body), "the body is not a prefix of the CLI's output");
}
