//! Reading capture files (pcap and pcapng) into an [`Ingester`].

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;

use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::PcapNgReader;
use pcap_file::PcapError;
use pktvault_schema::time::NANOS_PER_SEC;
use pktvault_schema::TsResolution;

use crate::ingest::{Ingester, SourcePacket};
use crate::{Error, Result};

/// The outcome of importing one file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileReport {
    /// Packets written.
    pub packets: u64,
    /// Packets that could not be stored, each explained in `warnings`.
    pub skipped: u64,
    /// Problems that did not stop the import, such as a truncated last record.
    pub warnings: Vec<String>,
    /// Whether the import stopped early because the ingester was interrupted
    /// (see [`Ingester::interrupt_on`]).
    pub interrupted: bool,
}

/// How often a parser waiting for input checks whether it was interrupted.
const INTERRUPT_POLL: std::time::Duration = std::time::Duration::from_millis(100);

const PCAP_MAGICS: [[u8; 4]; 4] =
    [[0xd4, 0xc3, 0xb2, 0xa1], [0xa1, 0xb2, 0xc3, 0xd4], [0x4d, 0x3c, 0xb2, 0xa1], [0xa1, 0xb2, 0x3c, 0x4d]];
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// Most warnings kept per file; further ones are counted.
const MAX_WARNINGS: usize = 20;

impl FileReport {
    /// Returns whether to stop before the next packet, because the
    /// ingester was interrupted.
    fn stops_for_interrupt(&mut self, ingester: &Ingester) -> bool {
        if ingester.is_interrupted() {
            self.interrupted = true;
        }
        self.interrupted
    }

    /// Counts packet `number` of `path` as skipped, with the reason.
    fn skip(&mut self, path: &Path, number: u64, reason: &str) {
        self.skipped += 1;
        self.warn(format!("{}: packet {number} {reason}; skipped", path.display()));
    }

    fn warn(&mut self, warning: String) {
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(warning);
        } else if self.warnings.len() == MAX_WARNINGS {
            self.warnings.push("further warnings for this file are not shown".into());
        }
    }
}

/// Largest captured length that libpcap 1.10 reads from a file
/// (`MAXIMUM_SNAPLEN`). tcpdump stops at a longer record, so one is not
/// written into a segment that tcpdump then cannot read.
pub const MAX_CAPLEN: u32 = 262_144;

/// The name of standard input in messages, for the file name `-`.
pub const STDIN_NAME: &str = "standard input";

/// Bytes read from the input at a time.
const READ_BYTES: usize = 1 << 20;

/// Imports every packet of the pcap or pcapng file at `path`; `-` reads
/// standard input, so a capture can be piped in.
///
/// A damaged or truncated record ends the file with a warning; the packets
/// before it stay imported. A file that is not a capture is an error.
pub fn import_file(path: &Path, ingester: &mut Ingester) -> Result<FileReport> {
    let (path, mut source): (&Path, Box<dyn Read + Send>) = if path.as_os_str() == "-" {
        (Path::new(STDIN_NAME), Box::new(std::io::stdin()))
    } else {
        (path, Box::new(File::open(path).map_err(Error::io("cannot open", path))?))
    };
    let bad_input = |reason: String| Error::BadInput { path: path.to_path_buf(), reason };
    // The magic is read from the stream itself and put back in front of it,
    // because a pipe cannot be opened twice.
    let mut magic = [0u8; 4];
    let read = read_full(&mut source, &mut magic).map_err(Error::io("cannot read", path))?;
    if read < 4 {
        return Err(bad_input(format!("the input is {read} bytes long, too short for a pcap or pcapng header")));
    }
    let reader = std::io::Cursor::new(magic).chain(source);
    if PCAP_MAGICS.contains(&magic) {
        import_pcap(path, reader, ingester)
    } else if magic == PCAPNG_MAGIC {
        let input =
            ReadBuffer::new(reader, ingester.interrupt_flag()).map_err(Error::io("cannot start reading", path))?;
        import_pcapng(path, input, ingester)
    } else if magic.iter().all(|byte| byte.is_ascii_graphic() || *byte == b' ') {
        // A text file, such as tcpdump's printed output, or a capture format
        // whose magic is text, such as snoop's.
        Err(bad_input(format!(
            "not a pcap or pcapng file (it starts with the text {:?}); give a capture file, or convert a capture of another format with 'editcap -F pcap' first",
            String::from_utf8_lossy(&magic)
        )))
    } else {
        Err(bad_input(format!(
            "not a pcap or pcapng file (it starts with bytes {:02x} {:02x} {:02x} {:02x}); convert it with 'editcap -F pcap' first",
            magic[0], magic[1], magic[2], magic[3]
        )))
    }
}

/// Reads until `buffer` is full or the input ends; returns the bytes read.
fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(count) => filled += count,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

fn describe(err: &PcapError) -> String {
    match err {
        PcapError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the file ends in the middle of a record".into()
        }
        other => other.to_string(),
    }
}

/// The fields of a classic pcap file header.
struct PcapHeader {
    big_endian: bool,
    resolution: TsResolution,
    snaplen: u32,
    linktype: u32,
}

impl PcapHeader {
    /// Parses the 24-byte header, checking the version as libpcap does.
    fn parse(bytes: &[u8; 24]) -> std::result::Result<PcapHeader, String> {
        let (big_endian, resolution) = match [bytes[0], bytes[1], bytes[2], bytes[3]] {
            [0xd4, 0xc3, 0xb2, 0xa1] => (false, TsResolution::Micro),
            [0xa1, 0xb2, 0xc3, 0xd4] => (true, TsResolution::Micro),
            [0x4d, 0x3c, 0xb2, 0xa1] => (false, TsResolution::Nano),
            [0xa1, 0xb2, 0x3c, 0x4d] => (true, TsResolution::Nano),
            [a, b, c, d] => return Err(format!("invalid pcap magic {a:02x} {b:02x} {c:02x} {d:02x}")),
        };
        let header = PcapHeader { big_endian, resolution, snaplen: 0, linktype: 0 };
        let (major, minor) = (header.u16_at(bytes, 4), header.u16_at(bytes, 6));
        if major != 2 || minor > 4 {
            return Err(format!(
                "pcap version {major}.{minor} is not supported; libpcap and pktvault read versions 2.0 to 2.4"
            ));
        }
        // The field is kept whole: its top four bits can give the length of
        // an FCS at the end of each frame, which the segment files keep too.
        // NOTE: with those bits set, the native decoder treats the link type
        // as unknown and decodes nothing. --bpf filters still work, because
        // libpcap masks the bits.
        let linktype = header.u32_at(bytes, 20);
        Ok(PcapHeader { snaplen: header.u32_at(bytes, 16), linktype, ..header })
    }

    fn u16_at(&self, bytes: &[u8], offset: usize) -> u16 {
        let field = [bytes[offset], bytes[offset + 1]];
        if self.big_endian {
            u16::from_be_bytes(field)
        } else {
            u16::from_le_bytes(field)
        }
    }

    fn u32_at(&self, bytes: &[u8], offset: usize) -> u32 {
        let field = [bytes[offset], bytes[offset + 1], bytes[offset + 2], bytes[offset + 3]];
        if self.big_endian {
            u32::from_be_bytes(field)
        } else {
            u32::from_le_bytes(field)
        }
    }
}

/// Input bytes read ahead of the record being parsed.
/// Room in front of each read-ahead buffer for the unparsed end of the
/// buffer before it, which is less than one record.
const HEADROOM: usize = 16 + MAX_CAPLEN as usize;

/// Buffers filled ahead of the parser. Their memory is at most
/// (`READ_AHEAD_BUFFERS` + 2) x ([`HEADROOM`] + [`READ_BYTES`]).
const READ_AHEAD_BUFFERS: usize = 2;

/// A buffer of the reading thread: the bytes read start at [`HEADROOM`] and
/// end at the given position. An end of [`HEADROOM`] is the end of the input.
type Filled = std::io::Result<(Vec<u8>, usize)>;

/// Parses records from buffers that a thread of its own reads from the
/// input, so that the kernel's copy of the input runs on another core than
/// decoding and indexing, which bound an import.
struct ReadBuffer {
    filled: Receiver<Filled>,
    /// When set, a wait for input ends with an error of kind `Interrupted`.
    interrupt: Option<Arc<AtomicBool>>,
    /// Buffers parsed to the end, for the reading thread to fill again.
    spare: SyncSender<Vec<u8>>,
    bytes: Vec<u8>,
    /// Start of the unparsed bytes.
    start: usize,
    /// End of the bytes read.
    end: usize,
    ended: bool,
}

impl ReadBuffer {
    /// Starts the reading thread.
    fn new(mut reader: impl Read + Send + 'static, interrupt: Option<Arc<AtomicBool>>) -> std::io::Result<ReadBuffer> {
        let (filled_tx, filled) = std::sync::mpsc::sync_channel::<Filled>(READ_AHEAD_BUFFERS);
        let (spare, spare_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(READ_AHEAD_BUFFERS + 2);
        // The thread ends at the end of the input, at an error, or when the
        // parser is dropped. It is not joined, because a read from a pipe
        // may wait for its writer indefinitely.
        std::thread::Builder::new().name("import-reader".into()).spawn(move || loop {
            let mut buffer = spare_rx.try_recv().unwrap_or_else(|_| vec![0; HEADROOM + READ_BYTES]);
            let result = read_full(&mut reader, &mut buffer[HEADROOM..]);
            let last = !matches!(result, Ok(count) if count > 0);
            if filled_tx.send(result.map(|count| (buffer, HEADROOM + count))).is_err() || last {
                return;
            }
        })?;
        Ok(ReadBuffer { filled, interrupt, spare, bytes: Vec::new(), start: 0, end: 0, ended: false })
    }

    /// Makes at least `needed` unparsed bytes available, at most
    /// [`HEADROOM`]. Returns false when the input ends before.
    fn fill(&mut self, needed: usize) -> std::io::Result<bool> {
        debug_assert!(needed <= HEADROOM);
        while self.end - self.start < needed {
            if self.ended {
                return Ok(false);
            }
            let (mut next, next_end) = self.next_filled()?;
            if next_end == HEADROOM {
                self.ended = true;
            }
            // The unparsed end of this buffer, shorter than `needed`, goes
            // in front of the bytes of the next one.
            let tail = self.end - self.start;
            next[HEADROOM - tail..HEADROOM].copy_from_slice(&self.bytes[self.start..self.end]);
            let parsed = std::mem::replace(&mut self.bytes, next);
            if !parsed.is_empty() {
                let _ = self.spare.try_send(parsed);
            }
            self.start = HEADROOM - tail;
            self.end = next_end;
        }
        Ok(true)
    }

    /// Waits for the next filled buffer. An input that goes quiet, such as
    /// a pipe from a capture of an idle link, does not delay an interrupt.
    fn next_filled(&self) -> std::io::Result<(Vec<u8>, usize)> {
        loop {
            match self.filled.recv_timeout(INTERRUPT_POLL) {
                Ok(result) => return result,
                Err(RecvTimeoutError::Timeout) => {
                    if self.interrupt.as_ref().is_some_and(|flag| flag.load(Ordering::Relaxed)) {
                        return Err(std::io::Error::new(std::io::ErrorKind::Interrupted, "interrupted"));
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(std::io::Error::other("the thread reading the input stopped"));
                }
            }
        }
    }

    fn unparsed(&self) -> &[u8] {
        &self.bytes[self.start..self.end]
    }
}

/// Byte stream of the reading thread's buffers, for the pcapng parser. An
/// interrupt during a wait for input fails the read with kind `Other`,
/// because `read_exact` retries reads that fail with `Interrupted`.
impl Read for ReadBuffer {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        match self.fill(1) {
            Ok(true) => {}
            Ok(false) => return Ok(0),
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {
                return Err(std::io::Error::other("interrupted"));
            }
            Err(err) => return Err(err),
        }
        let count = buffer.len().min(self.end - self.start);
        buffer[..count].copy_from_slice(&self.bytes[self.start..self.start + count]);
        self.start += count;
        Ok(count)
    }
}

fn import_pcap(path: &Path, mut reader: impl Read + Send + 'static, ingester: &mut Ingester) -> Result<FileReport> {
    let bad_input = |reason: String| Error::BadInput { path: path.to_path_buf(), reason };
    let mut header_bytes = [0u8; 24];
    let read = read_full(&mut reader, &mut header_bytes).map_err(Error::io("cannot read", path))?;
    if read < header_bytes.len() {
        return Err(bad_input(format!("the input is {read} bytes long, shorter than the 24-byte pcap file header")));
    }
    let header = PcapHeader::parse(&header_bytes).map_err(bad_input)?;
    let mut input =
        ReadBuffer::new(reader, ingester.interrupt_flag()).map_err(Error::io("cannot start reading", path))?;
    let mut report = FileReport::default();
    let stop = |report: &mut FileReport, reason: String| {
        report.warn(format!(
            "{}: stopped after packet {}: {reason}; the packets before it were imported",
            path.display(),
            report.packets + report.skipped
        ));
    };
    loop {
        let record_header = match input.fill(16) {
            Ok(true) => {
                let bytes = &input.unparsed()[..16];
                [0, 4, 8, 12].map(|offset| header.u32_at(bytes, offset))
            }
            Ok(false) if input.unparsed().is_empty() => break,
            Ok(false) => {
                stop(&mut report, "the file ends in the middle of a record header".into());
                break;
            }
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted && ingester.is_interrupted() => {
                report.interrupted = true;
                break;
            }
            Err(err) => return Err(Error::io("cannot read", path)(err)),
        };
        let [ts_sec, ts_frac, caplen, wire_len] = record_header;
        if caplen > MAX_CAPLEN {
            stop(
                &mut report,
                format!(
                    "the next record has a captured length of {caplen} bytes, more than the {MAX_CAPLEN} bytes libpcap reads, so the file is damaged from there"
                ),
            );
            break;
        }
        let record_bytes = 16 + caplen as usize;
        match input.fill(record_bytes) {
            Ok(true) => {}
            Ok(false) => {
                stop(
                    &mut report,
                    format!(
                        "the file ends in the middle of a record of {caplen} captured bytes, {} of which are present",
                        input.unparsed().len() - 16
                    ),
                );
                break;
            }
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted && ingester.is_interrupted() => {
                report.interrupted = true;
                break;
            }
            Err(err) => return Err(Error::io("cannot read", path)(err)),
        }
        let packet = SourcePacket {
            ts_sec,
            ts_frac,
            resolution: header.resolution,
            wire_len,
            data: &input.unparsed()[16..record_bytes],
        };
        ingester.ingest(header.linktype, header.snaplen, &packet)?;
        input.start += record_bytes;
        report.packets += 1;
        if report.stops_for_interrupt(ingester) {
            break;
        }
    }
    Ok(report)
}

#[derive(Debug, Clone, Copy)]
struct Interface {
    linktype: u32,
    snaplen: u32,
    /// `if_tsresol`: bit 7 clear means 10^-n seconds, set means 2^-n seconds.
    tsresol: u8,
    /// `if_tsoffset` in seconds.
    tsoffset: u64,
}

/// Converts a pcapng timestamp in units of `tsresol` to nanoseconds.
fn pcapng_ts_ns(units: u64, tsresol: u8) -> Option<u64> {
    let exponent = u32::from(tsresol & 0x7f);
    let nanos: u128 = if tsresol & 0x80 == 0 {
        if exponent <= 9 {
            u128::from(units) * 10u128.pow(9 - exponent)
        } else {
            u128::from(units) / 10u128.checked_pow(exponent - 9)?
        }
    } else {
        (u128::from(units) * u128::from(NANOS_PER_SEC)).checked_shr(exponent)?
    };
    u64::try_from(nanos).ok()
}

const SECTION_HEADER_BLOCK: u32 = 0x0A0D_0D0A;
const INTERFACE_DESCRIPTION_BLOCK: u32 = 1;
const OBSOLETE_PACKET_BLOCK: u32 = 2;
const SIMPLE_PACKET_BLOCK: u32 = 3;
const ENHANCED_PACKET_BLOCK: u32 = 6;

/// Decodes the fixed fields of an enhanced (or obsolete) packet block body:
/// interface id, 64-bit timestamp in interface units, original length and
/// captured bytes. Returns `None` when the body is too short for them.
fn packet_block_fields(body: &[u8], obsolete: bool, big_endian: bool) -> Option<(u32, u64, u32, Vec<u8>)> {
    let word = |offset: usize| -> Option<u32> {
        let bytes: [u8; 4] = body.get(offset..offset + 4)?.try_into().ok()?;
        Some(if big_endian { u32::from_be_bytes(bytes) } else { u32::from_le_bytes(bytes) })
    };
    let interface_id = if obsolete {
        let bytes: [u8; 2] = body.get(0..2)?.try_into().ok()?;
        u32::from(if big_endian { u16::from_be_bytes(bytes) } else { u16::from_le_bytes(bytes) })
    } else {
        word(0)?
    };
    let units = (u64::from(word(4)?) << 32) | u64::from(word(8)?);
    let captured = word(12)? as usize;
    let original = word(16)?;
    let data = body.get(20..20usize.checked_add(captured)?)?.to_vec();
    Some((interface_id, units, original, data))
}

fn import_pcapng(path: &Path, reader: impl Read, ingester: &mut Ingester) -> Result<FileReport> {
    let mut pcapng = match PcapNgReader::new(reader) {
        Ok(pcapng) => pcapng,
        Err(_) if ingester.is_interrupted() => return Ok(FileReport { interrupted: true, ..FileReport::default() }),
        Err(err) => {
            return Err(Error::BadInput {
                path: path.to_path_buf(),
                reason: format!("invalid pcapng section header: {}", describe(&err)),
            })
        }
    };
    let mut interfaces: Vec<Interface> = Vec::new();
    let mut report = FileReport::default();
    let mut record_number = 0u64;
    // Blocks are read raw and packet blocks decoded here, without their
    // options: pcap-file rejects a whole block whose comment is not UTF-8,
    // and a packet needs none of its options.
    while let Some(block) = pcapng.next_raw_block() {
        let (block_type, body) = match block {
            Ok(block) => (block.type_, block.body.into_owned()),
            Err(_) if ingester.is_interrupted() => {
                report.interrupted = true;
                break;
            }
            Err(err) => {
                report.warn(format!(
                    "{}: stopped after packet {record_number}: {}; the packets before it were imported",
                    path.display(),
                    describe(&err)
                ));
                break;
            }
        };
        let big_endian = pcapng.section().endianness == pcap_file::Endianness::Big;
        let (interface_id, units, wire_len, data) = match block_type {
            SECTION_HEADER_BLOCK => {
                interfaces.clear();
                continue;
            }
            INTERFACE_DESCRIPTION_BLOCK => {
                // The reader has parsed it already.
                let Some(idb) = pcapng.interfaces().last() else { continue };
                let mut interface =
                    Interface { linktype: u32::from(idb.linktype), snaplen: idb.snaplen, tsresol: 6, tsoffset: 0 };
                for option in &idb.options {
                    match option {
                        InterfaceDescriptionOption::IfTsResol(tsresol) => interface.tsresol = *tsresol,
                        InterfaceDescriptionOption::IfTsOffset(offset) => interface.tsoffset = *offset,
                        _ => {}
                    }
                }
                interfaces.push(interface);
                continue;
            }
            ENHANCED_PACKET_BLOCK | OBSOLETE_PACKET_BLOCK => {
                match packet_block_fields(&body, block_type == OBSOLETE_PACKET_BLOCK, big_endian) {
                    Some(fields) => fields,
                    None => {
                        record_number += 1;
                        report.skip(path, record_number, "is a damaged packet block");
                        continue;
                    }
                }
            }
            SIMPLE_PACKET_BLOCK => {
                record_number += 1;
                report.skip(path, record_number, "is a simple packet block without a timestamp");
                continue;
            }
            _ => continue,
        };
        record_number += 1;
        let Some(interface) = interfaces.get(interface_id as usize).copied() else {
            report.skip(path, record_number, &format!("names interface {interface_id}, which is not described"));
            continue;
        };
        if data.len() > MAX_CAPLEN as usize {
            let reason = format!(
                "has a captured length of {} bytes, more than the {MAX_CAPLEN} bytes libpcap reads",
                data.len()
            );
            report.skip(path, record_number, &reason);
            continue;
        }
        let ts_ns = pcapng_ts_ns(units, interface.tsresol)
            .and_then(|ns| ns.checked_add(interface.tsoffset.checked_mul(NANOS_PER_SEC)?));
        let Some(ts_ns) = ts_ns.filter(|ns| ns / NANOS_PER_SEC <= u64::from(u32::MAX)) else {
            report.skip(path, record_number, "has a timestamp after the year 2106, which a pcap file cannot store");
            continue;
        };
        let resolution = if interface.tsresol == 6 { TsResolution::Micro } else { TsResolution::Nano };
        let packet = SourcePacket {
            ts_sec: (ts_ns / NANOS_PER_SEC) as u32,
            ts_frac: ((ts_ns % NANOS_PER_SEC) / resolution.nanos_per_unit()) as u32,
            resolution,
            wire_len,
            data: &data,
        };
        ingester.ingest(interface.linktype, interface.snaplen, &packet)?;
        report.packets += 1;
        if report.stops_for_interrupt(ingester) {
            break;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::{pcapng_ts_ns, ReadBuffer, MAX_CAPLEN};

    /// Returns records of a 4-byte length and that many bytes of the record's number.
    fn records(sizes: &[usize]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for (number, &size) in sizes.iter().enumerate() {
            bytes.extend_from_slice(&(size as u32).to_le_bytes());
            bytes.extend(std::iter::repeat_n(number as u8, size));
        }
        bytes
    }

    #[test]
    fn read_buffer_keeps_records_whole_across_reads() {
        // Every seventh record has the largest captured length, so records
        // of every size cross the boundaries of the 1 MiB reads.
        let sizes: Vec<usize> =
            (0..40).map(|number| if number % 7 == 3 { MAX_CAPLEN as usize } else { 60 + number * 1000 }).collect();
        let mut input = ReadBuffer::new(std::io::Cursor::new(records(&sizes)), None).unwrap();
        for (number, &size) in sizes.iter().enumerate() {
            assert!(input.fill(4).unwrap(), "length of record {number}");
            let length = u32::from_le_bytes(input.unparsed()[..4].try_into().unwrap()) as usize;
            assert_eq!(length, size, "length of record {number}");
            assert!(input.fill(4 + size).unwrap(), "record {number}");
            assert!(input.unparsed()[4..4 + size].iter().all(|&byte| byte == number as u8), "bytes of record {number}");
            input.start += 4 + size;
        }
        assert!(!input.fill(1).unwrap(), "the input has ended");
        assert!(input.unparsed().is_empty());
    }

    #[test]
    fn read_buffer_keeps_the_cut_end() {
        let mut bytes = records(&[2_000_000, 300]);
        bytes.truncate(bytes.len() - 100);
        let mut input = ReadBuffer::new(std::io::Cursor::new(bytes), None).unwrap();
        assert!(input.fill(4).unwrap());
        input.start += 4;
        for _ in 0..2_000_000 / 1000 {
            assert!(input.fill(1000).unwrap());
            input.start += 1000;
        }
        assert!(!input.fill(304).unwrap(), "the second record is cut");
        assert_eq!(input.unparsed().len(), 204, "its bytes stay available");
        assert!(!input.fill(304).unwrap(), "the end stays the end");
    }

    #[test]
    fn pcapng_resolutions_convert_to_nanoseconds() {
        assert_eq!(pcapng_ts_ns(1_500_000, 6), Some(1_500_000_000));
        assert_eq!(pcapng_ts_ns(7, 9), Some(7));
        assert_eq!(pcapng_ts_ns(3, 3), Some(3_000_000));
        assert_eq!(pcapng_ts_ns(12_345, 12), Some(12));
        assert_eq!(pcapng_ts_ns(1 << 20, 0x80 | 20), Some(1_000_000_000));
        assert_eq!(pcapng_ts_ns(u64::MAX, 6), None);
    }
}
