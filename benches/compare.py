#!/usr/bin/env python3
"""Macro-benchmark of pktvault against tcpdump, cp, cat and dd, all in one run.

Generates a seeded trace with pktvault-gen (or takes --input FILE), then
measures ingest, selective and broad extraction, index size, peak memory and
freshness, and prints a Markdown report with medians and ratios.

    python3 benches/compare.py --bytes 1G --runs 3 --bin /var/tmp/pktvault-target/release

Use --smoke for a quick check on a small trace (CI runs it with debug binaries).
"""

import argparse
import http.client
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse


def run(args, allowed=(0,)):
    """Runs `args` and exits with its error output unless its exit status is in `allowed`."""
    result = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if result.returncode not in allowed:
        sys.exit(f"compare.py: '{' '.join(args)}' failed with exit status {result.returncode}: {result.stderr.strip()}")
    return result


def timed(args, runs, setup=None, allowed=(0,)):
    """Returns the median wall time of `args` over `runs` runs, in seconds."""
    times = []
    for _ in range(runs):
        if setup:
            setup()
        start = time.perf_counter()
        run(args, allowed)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def user_space_copy(source, target):
    """Returns a command that copies source to target through user space in
    128 KiB blocks. GNU dd never uses copy_file_range, where cat and cp do."""
    return ["dd", f"if={source}", f"of={target}", "bs=128K", "status=none"]


def peak_rss_kib(args):
    result = subprocess.run(["/usr/bin/time", "-v"] + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    return int(match.group(1)) if match else -1


def first_byte_seconds(args):
    start = time.perf_counter()
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    process.stdout.read(25)  # the pcap header and the first record byte
    elapsed = time.perf_counter() - start
    process.stdout.read()
    process.wait()
    return elapsed


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """A `pktvault serve` on a free loopback port, queried without starting a process per request."""

    def __init__(self, pktvault, data):
        self.port = free_port()
        self.process = subprocess.Popen(
            [pktvault, "serve", "--data-dir", data, "--listen", f"127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(100):
            try:
                self.get("/api/v1/health")
                return
            except OSError:
                time.sleep(0.05)
        self.process.kill()
        sys.exit("compare.py: pktvault serve did not answer on its health route")

    def get(self, path):
        """Returns (seconds to the whole response, seconds to its first body byte, body)."""
        start = time.perf_counter()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        connection.request("GET", path)
        response = connection.getresponse()
        head = response.read(1)
        first = time.perf_counter() - start
        body = head + response.read()
        elapsed = time.perf_counter() - start
        connection.close()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
        return elapsed, first, body

    def timed(self, path, runs):
        return statistics.median(self.get(path)[0] for _ in range(runs))

    def timed_reused(self, path, runs):
        """Returns the median seconds of `runs` requests over one connection,
        as a client that keeps its connection alive sends them."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        times = []
        try:
            for _ in range(runs):
                start = time.perf_counter()
                connection.request("GET", path)
                response = connection.getresponse()
                body = response.read()
                times.append(time.perf_counter() - start)
                if response.status != 200:
                    raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
        finally:
            connection.close()
        return statistics.median(times)

    def stop(self):
        self.process.terminate()
        self.process.wait()


def sample_ipv4_hosts(trace, limit=200_000):
    """Returns {address: (packets, {port: packets})} over the first `limit`
    packets of `trace`, read through tcpdump so that pcapng works too. Reads
    Ethernet with VLAN tags, Linux cooked capture (v1 and v2), BSD loopback
    and raw IP."""
    output = subprocess.run(["tcpdump", "-r", trace, "-c", str(limit), "-w", "-"], capture_output=True).stdout
    if len(output) < 24:
        return {}
    order = "little" if output[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else "big"
    linktype = int.from_bytes(output[20:24], order) & 0xFFFF
    hosts = {}
    offset = 24
    while offset + 16 <= len(output):
        caplen = int.from_bytes(output[offset + 8:offset + 12], order)
        frame = output[offset + 16:offset + 16 + caplen]
        offset += 16 + caplen
        if linktype == 1:
            start, ethertype = 14, frame[12:14]
            while ethertype in (b"\x81\x00", b"\x88\xa8") and len(frame) >= start + 4:
                ethertype, start = frame[start + 2:start + 4], start + 4
            if ethertype != b"\x08\x00":
                continue
        elif linktype == 113:
            if frame[14:16] != b"\x08\x00":
                continue
            start = 16
        elif linktype == 276:
            if frame[0:2] != b"\x08\x00":
                continue
            start = 20
        elif linktype in (0, 108):
            # The address family: host byte order for NULL, network order for LOOP.
            if 2 not in (int.from_bytes(frame[0:4], "little"), int.from_bytes(frame[0:4], "big")):
                continue
            start = 4
        elif linktype in (12, 101, 228):
            start = 0
        else:
            return {}
        ip = frame[start:]
        if len(ip) < 20 or ip[0] >> 4 != 4:
            continue
        header = (ip[0] & 15) * 4
        ports = []
        if ip[9] in (6, 17) and len(ip) >= header + 4:
            ports = [int.from_bytes(ip[header:header + 2], "big"), int.from_bytes(ip[header + 2:header + 4], "big")]
        for address in {".".join(str(byte) for byte in ip[12:16]), ".".join(str(byte) for byte in ip[16:20])}:
            count, by_port = hosts.get(address, (0, {}))
            for port in set(ports):
                by_port[port] = by_port.get(port, 0) + 1
            hosts[address] = (count + 1, by_port)
    return hosts


def pcap_packet_count(data):
    """Counts the records of a little-endian pcap held in `data`."""
    count, offset = 0, 24
    while offset + 16 <= len(data):
        caplen = int.from_bytes(data[offset + 8:offset + 12], "little")
        offset += 16 + caplen
        count += 1
    return count


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--bin",
        default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "/var/tmp/pktvault-target"), "release"),
        help="folder with the pktvault and pktvault-gen binaries (default: the release build)",
    )
    parser.add_argument("--bytes", default="1G", help="size of the generated trace: a number with an optional K, M or G")
    parser.add_argument("--input", help="measure this pcap or pcapng file instead of a generated trace")
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement; the report gives their median")
    parser.add_argument("--rate", type=int, default=200_000, help="packets per second of the generated trace")
    parser.add_argument(
        "--result-packets",
        type=int,
        default=3000,
        help="also query a host with about this many packets, so that traces of different sizes compare at the same result size",
    )
    parser.add_argument("--work", help="folder for the trace and data, kept afterwards (default: a temporary folder, deleted)")
    parser.add_argument("--smoke", action="store_true", help="small trace, one run, no freshness test")
    parser.add_argument(
        "--low-disk",
        action="store_true",
        help="for traces near the free space: delete the data before the copy baselines, the generated trace "
        "after the ingest measurements, and compare broad extraction with cat to /dev/null, so at most two "
        "trace-sized files are on disk at a time",
    )
    args = parser.parse_args()
    if args.smoke:
        args.bytes, args.runs = "16M", 1
    if args.input and not os.path.isfile(args.input):
        sys.exit(f"compare.py: --input {args.input} is not a file; give a pcap or pcapng file")
    if not args.input and not re.fullmatch(r"[0-9]+(\.[0-9]+)?[KMG]?", args.bytes):
        sys.exit(f"compare.py: --bytes {args.bytes} is not a size; use a number with an optional K, M or G, such as 2G")
    if args.runs < 1:
        sys.exit(f"compare.py: --runs {args.runs} must be at least 1")

    pktvault = os.path.join(args.bin, "pktvault")
    generator = os.path.join(args.bin, "pktvault-gen")
    for tool in [pktvault, shutil.which("tcpdump"), "/usr/bin/time"]:
        if not tool or not os.path.exists(tool):
            sys.exit(f"compare.py: {tool or 'tcpdump'} is missing; build with 'cargo build --release --workspace' and install tcpdump and time")

    work = args.work or tempfile.mkdtemp(prefix="pktvault-bench-")
    os.makedirs(work, exist_ok=True)
    trace = args.input or os.path.join(work, "trace.pcap")
    if not args.input:
        run([generator, "--seed", "1", "--bytes", args.bytes, "--rate", str(args.rate), "-w", trace])
    trace_bytes = os.path.getsize(trace)
    data = os.path.join(work, "data")
    report = []

    def fresh_data():
        shutil.rmtree(data, ignore_errors=True)
        flush_writes()

    # Each run that writes starts with no dirty pages, so that it does not
    # wait for the writeback of what the run before wrote.
    def flush_writes():
        subprocess.run(["sync"], check=True)

    def new_file(path):
        """Returns a setup that removes `path`, so that every run writes a new
        file: overwriting one costs the filesystem more or less, depending on
        how the old blocks are freed."""

        def setup():
            if os.path.exists(path):
                os.remove(path)
            flush_writes()

        return setup

    # 1. Ingest.
    ingest = timed([pktvault, "import", "--data-dir", data, trace], args.runs, setup=fresh_data)
    if args.low_disk:
        fresh_data()
    copy = timed(["cp", trace, os.path.join(work, "copy.pcap")], args.runs, setup=new_file(os.path.join(work, "copy.pcap")))
    os.remove(os.path.join(work, "copy.pcap"))
    # cp copies inside the kernel (copy_file_range), and so does cat from
    # coreutils 9 when both ends are regular files. dd reads and writes
    # through user space, as any program that looks at the packets must.
    cat_copy = timed(["sh", "-c", f"cat {trace} > {os.path.join(work, 'copy.pcap')}"], args.runs, setup=new_file(os.path.join(work, "copy.pcap")))
    os.remove(os.path.join(work, "copy.pcap"))
    user_copy = timed(user_space_copy(trace, os.path.join(work, "copy.pcap")), args.runs, setup=new_file(os.path.join(work, "copy.pcap")))
    os.remove(os.path.join(work, "copy.pcap"))
    rewrite_file = os.path.join(work, "rewrite.pcap")
    rewrite = timed(["tcpdump", "-r", trace, "-w", rewrite_file], args.runs, setup=new_file(rewrite_file))
    os.remove(os.path.join(work, "rewrite.pcap"))
    # The last import, measured for memory, leaves the data the extractions use.
    fresh_data()
    import_rss = peak_rss_kib([pktvault, "import", "--data-dir", data, trace])
    if args.low_disk and not args.input:
        os.remove(trace)
    status = subprocess.run([pktvault, "status", "--data-dir", data, "--json"], capture_output=True, text=True, check=True)
    facts = json.loads(status.stdout)[0]
    packets = facts["packets"]
    if not packets or facts.get("first_packet_ns") is None:
        sys.exit(f"compare.py: the trace {trace} holds no packet; give a larger --bytes or another --input")
    first_s = facts["first_packet_ns"] // 1_000_000_000
    last_s = facts["last_packet_ns"] // 1_000_000_000 + 1
    segments = sorted(os.listdir(os.path.join(data, "0", "pcap")))
    segment_paths = [os.path.join(data, "0", "pcap", name) for name in segments]
    index_bytes = sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(os.path.join(data, "0", "index")) for name in names)
    pcap_bytes = sum(os.path.getsize(path) for path in segment_paths)
    report.append(("Ingest: pktvault import", ingest, f"{packets / ingest / 1e6:.2f} M packets/s, {trace_bytes / ingest / 1e6:.0f} MB/s"))
    report.append(("Ingest: cp", copy, f"import / cp = {ingest / copy:.1f}"))
    report.append(("Ingest: cat > file", cat_copy, f"import / cat = {ingest / cat_copy:.1f}"))
    report.append(("Ingest: dd bs=128K (through user space)", user_copy, f"import / dd = {ingest / user_copy:.1f}"))
    report.append(("Ingest: tcpdump -r -w", rewrite, f"import / tcpdump = {ingest / rewrite:.2f}"))

    extract = [pktvault, "extract", "--data-dir", data, "-w", "-"]
    window_all = ["--begin", str(first_s), "--end", str(last_s)]

    # 2. Selective extraction: a host that carries about 0.1% of the packets,
    # and a host with about --result-packets packets. Each candidate host is
    # measured with an extraction, and the nearest counts win.
    def host_packet_count(address):
        output = subprocess.run(extract + window_all + ["host", address], capture_output=True, check=False)
        return pcap_packet_count(output.stdout)

    target = packets / 1000
    counts = {}
    port = 443
    if args.input:
        # Candidates come from a sample of the trace, by their estimated count.
        sampled = sample_ipv4_hosts(trace)
        sample_packets = max(sum(count for count, _ in sampled.values()) / 2, 1)

        def nearest(expected_packets):
            return sorted(sampled, key=lambda address: abs(sampled[address][0] * packets / sample_packets - expected_packets))[:12]

        for address in nearest(target) + nearest(args.result_packets):
            if address not in counts:
                counts[address] = host_packet_count(address)
    else:
        # pktvault-gen numbers its IPv4 clients by popularity rank: 10.0.0.0
        # starts the most flows, and the flow count falls with the rank (Zipf,
        # exponent 1.1). Flow sizes vary, so packet counts follow the rank
        # only roughly.
        def client(index):
            return f"10.0.{index >> 8}.{index & 255}"

        for index in range(0, 600, 5):
            counts[client(index)] = host_packet_count(client(index))
        first = min(range(0, 600, 5), key=lambda index: abs(counts[client(index)] - target))
        # Search for the fixed result size near the rank that Zipf's law
        # predicts from the 0.1% host.
        if counts[client(first)] > 0 and args.result_packets > 0:
            estimate = int(first * (counts[client(first)] / args.result_packets) ** (1 / 1.1))
            for index in range(max(estimate - 40, 0), min(estimate + 41, 5000), 5):
                if client(index) not in counts:
                    counts[client(index)] = host_packet_count(client(index))
    if not counts or max(counts.values()) == 0:
        sys.exit("compare.py: no IPv4 host of the trace matched an extraction; the selective measurements need IPv4 traffic")
    host = min(counts, key=lambda address: abs(counts[address] - target))
    host_packets = counts[host]
    fixed_host = min(counts, key=lambda address: abs(counts[address] - args.result_packets))
    fixed_packets = counts[fixed_host]
    if args.input:
        # The port query uses the host's busiest port in the sample.
        by_port = sampled.get(host, (0, {}))[1]
        if by_port:
            port = max(by_port, key=by_port.get)
    fixed_note = "" if abs(fixed_packets - args.result_packets) <= args.result_packets / 4 else f", the nearest to {args.result_packets} found"
    # tcpdump needs 'vlan and' to look inside VLAN tags, which only Ethernet
    # segments carry. On other link types libpcap rejects 'vlan'.
    with open(segment_paths[0], "rb") as segment:
        ethernet = int.from_bytes(segment.read(24)[20:24], "little") & 0xFFFF == 1

    def tcpdump_filter(expression):
        return f"({expression}) or (vlan and {expression})" if ethernet else expression

    tcpdump_host = tcpdump_filter(f"host {host}")

    def tcpdump_over(paths, expression):
        start = time.perf_counter()
        for path in paths:
            run(["tcpdump", "-r", path, "-w", "/dev/null", expression])
        return time.perf_counter() - start

    # pktvault extract exits with status 1 when nothing matched.
    selective = timed(extract + window_all + ["host", host], args.runs, allowed=(0, 1))
    baseline = statistics.median(tcpdump_over(segment_paths, tcpdump_host) for _ in range(args.runs))
    first_byte = first_byte_seconds(extract + window_all + ["host", host])
    same_note = f"; also the host nearest to {args.result_packets} packets{fixed_note}" if fixed_host == host else ""
    report.append((f"Selective: host {host} ({host_packets} packets{same_note}), whole trace", selective, f"tcpdump over all segments {baseline:.3f} s, speedup {baseline / selective:.1f}x, first byte {first_byte * 1000:.1f} ms"))

    if fixed_host != host:
        fixed = timed(extract + window_all + ["host", fixed_host], args.runs, allowed=(0, 1))
        fixed_baseline = statistics.median(
            tcpdump_over(segment_paths, tcpdump_filter(f"host {fixed_host}")) for _ in range(args.runs)
        )
        report.append((f"Selective: host {fixed_host} ({fixed_packets} packets{fixed_note}), whole trace", fixed, f"speedup {fixed_baseline / fixed:.1f}x over tcpdump"))

    port_filter = ["host", host, "and", "port", str(port)]
    host_port = timed(extract + window_all + port_filter, args.runs, allowed=(0, 1))
    baseline_port = statistics.median(
        tcpdump_over(segment_paths, tcpdump_filter(f"host {host} and port {port}")) for _ in range(args.runs)
    )
    report.append((f"Selective: host {host} and port {port}", host_port, f"speedup {baseline_port / host_port:.1f}x over tcpdump"))

    middle = (first_s + last_s) // 2
    # A trace with gaps may have recorded nothing in the middle minute; the
    # window then starts at the middle segment's first second instead.
    probe = subprocess.run([pktvault, "extract", "--data-dir", data, "--begin", str(middle), "--end", str(middle + 60), "-w", "/dev/null"], capture_output=True)
    if probe.returncode != 0:
        middle = int(os.path.basename(segment_paths[len(segment_paths) // 2]).split(".")[0])
    minute = ["--begin", str(middle), "--end", str(middle + 60)]
    overlapping = [path for path in segment_paths if middle - 60 <= int(os.path.basename(path).split(".")[0]) < middle + 60]
    window_time = timed(extract + minute + ["host", host], args.runs, allowed=(0, 1))
    window_baseline = statistics.median(tcpdump_over(overlapping, tcpdump_host) for _ in range(args.runs))
    report.append(("Selective: host, one-minute window", window_time, f"tcpdump over {len(overlapping)} overlapping segment{'s' if len(overlapping) != 1 else ''} {window_baseline:.3f} s, speedup {window_baseline / window_time:.1f}x"))

    # The same queries through the HTTP API: the server keeps the index open
    # between requests, as it does for ntopng, and no process starts per query.
    server = Server(pktvault, data)
    try:
        def pcap_path(begin, end, expression):
            query = urllib.parse.urlencode({"begin": begin, "end": end, "filter": expression})
            return f"/api/v1/interfaces/0/pcap?{query}"

        # A request takes milliseconds, and the median of three moved by 2 x
        # between runs on a shared machine, so each query is asked 15 times.
        requests = max(args.runs, 15)
        host_path = pcap_path(first_s, last_s, f"host {host}")
        _, _, body = server.get(host_path)  # opens the index and warms its cache
        if pcap_packet_count(body) != host_packets:
            sys.exit(f"compare.py: the server returned {pcap_packet_count(body)} packets for host {host}, the CLI {host_packets}")
        served = server.timed(host_path, requests)
        served_first = statistics.median(server.get(host_path)[1] for _ in range(requests))
        report.append((f"Selective over HTTP: host {host}, whole trace", served, f"speedup {baseline / served:.1f}x over tcpdump, first byte {served_first * 1000:.1f} ms"))
        served_reused = server.timed_reused(host_path, requests)
        report.append((f"Selective over HTTP, one connection for all requests: host {host}", served_reused, f"speedup {baseline / served_reused:.1f}x over tcpdump"))
        if fixed_host != host:
            served_fixed = server.timed(pcap_path(first_s, last_s, f"host {fixed_host}"), requests)
            report.append((f"Selective over HTTP: host {fixed_host}, whole trace", served_fixed, f"speedup {fixed_baseline / served_fixed:.1f}x over tcpdump"))
        served_port = server.timed(pcap_path(first_s, last_s, f"host {host} and port {port}"), requests)
        report.append((f"Selective over HTTP: host and port {port}", served_port, f"speedup {baseline_port / served_port:.1f}x over tcpdump"))
        served_window = server.timed(pcap_path(middle, middle + 60, f"host {host}"), requests)
        report.append(("Selective over HTTP: host, one-minute window", served_window, f"speedup {window_baseline / served_window:.1f}x over tcpdump"))
    finally:
        server.stop()

    # 3. Broad extraction versus cat of an output of the same size.
    broad_file = os.path.join(work, "broad.pcap")
    broad = timed([pktvault, "extract", "--data-dir", data, "-w", broad_file] + window_all + ["tcp"], args.runs, setup=new_file(broad_file), allowed=(0, 1))
    broad_rss = peak_rss_kib([pktvault, "extract", "--data-dir", data, "-w", "/dev/null"] + window_all + ["tcp"])
    # When nothing matched, pktvault writes only the 24-byte pcap header.
    if not os.path.exists(broad_file) or os.path.getsize(broad_file) <= 24:
        report.append(("Broad: tcp", broad, "no tcp packet in the trace, so there is no output to compare with cat"))
    else:
        cat_target = "/dev/null" if args.low_disk else os.path.join(work, "cat.pcap")
        cat_setup = flush_writes if args.low_disk else new_file(cat_target)
        cat = timed(["sh", "-c", f"cat {broad_file} > {cat_target}"], args.runs, setup=cat_setup)
        cat_name = "cat of the output to /dev/null" if args.low_disk else "cat of the same size"
        report.append((f"Broad: tcp ({os.path.getsize(broad_file) / 1e6:.0f} MB out)", broad, f"{cat_name} {cat:.3f} s, ratio {broad / cat:.1f}"))
        if not args.low_disk:
            user_copy = timed(user_space_copy(broad_file, cat_target), args.runs, setup=cat_setup)
            report.append(("Broad: tcp, against dd bs=128K of the output", broad, f"dd of the same size {user_copy:.3f} s, ratio {broad / user_copy:.1f}"))
        # Written to /dev/null, so that neither side waits for the page cache to take the output.
        broad_null = timed([pktvault, "extract", "--data-dir", data, "-w", "/dev/null"] + window_all + ["tcp"], args.runs, allowed=(0, 1))
        cat_null = timed(["sh", "-c", f"cat {broad_file} > /dev/null"], args.runs)
        report.append(("Broad: tcp, output to /dev/null", broad_null, f"cat of the output to /dev/null {cat_null:.3f} s, ratio {broad_null / cat_null:.1f}"))
        os.remove(broad_file)
        if not args.low_disk:
            os.remove(cat_target)

    if trace_bytes >= 1e9:
        size = f"{trace_bytes / 1e9:.2f} GB"
    elif trace_bytes >= 1e6:
        size = f"{trace_bytes / 1e6:.1f} MB"
    else:
        size = f"{trace_bytes / 1e3:.1f} kB"
    print(f"Trace: {size}, {packets} packets, {len(segments)} segment{'s' if len(segments) != 1 else ''}; machine: {os.cpu_count()} cores")
    print()
    print("| Measurement | Median (s) | Comparison |")
    print("|---|---|---|")
    for name, seconds, comparison in report:
        # Queries over HTTP take about a millisecond, which three decimals
        # would print as 0.001 or 0.000.
        digits = 3 if seconds >= 0.1 else 4
        print(f"| {name} | {seconds:.{digits}f} | {comparison} |")
    print(f"| Index size | - | {index_bytes / 1e6:.1f} MB for {pcap_bytes / 1e6:.0f} MB of segments = {100 * index_bytes / pcap_bytes:.2f}% |")
    print(f"| Peak RSS | - | import {import_rss / 1024:.0f} MiB, broad extraction {broad_rss / 1024:.0f} MiB |")

    # 6. Freshness: from sending a packet on lo to an extraction returning it.
    if not args.smoke:
        fresh = os.path.join(work, "fresh")
        recorder = subprocess.Popen([pktvault, "record", "--data-dir", fresh, "-i", "lo"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(2)
            receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            receiver.bind(("127.0.0.1", 0))
            port = receiver.getsockname()[1]
            sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            delays = []
            for _ in range(5):
                sent = time.perf_counter()
                sender.sendto(b"pktvault freshness probe", ("127.0.0.1", port))
                now = time.time()
                while True:
                    output = subprocess.run(
                        [pktvault, "extract", "--data-dir", fresh, "--begin", str(int(now) - 5), "--end", str(int(now) + 5), "-w", "-", "udp", "port", str(port)],
                        capture_output=True,
                    )
                    found = output.stdout.count(b"pktvault freshness probe")
                    if found >= len(delays) + 1:
                        break
                delays.append(time.perf_counter() - sent)
            print(f"| Freshness (record -i lo) | {statistics.median(delays):.3f} | send to extractable, median of 5 |")
        finally:
            recorder.terminate()
            recorder.wait()
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
