//! A file appended to by a thread of its own.
//!
//! The thread that decodes and indexes packets fills a buffer, and full
//! buffers go to a writing thread, which hands them to the kernel. The copy
//! into the page cache then runs on the second core, beside decoding and
//! indexing instead of after them. A slow write, into a page cache under
//! writeback for example, no longer stalls the capture.

use std::fs::File;
use std::io::{self, Seek, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Full buffers handed to the writing thread and not yet returned, at most.
const IN_FLIGHT: usize = 3;

/// Written bytes after which their writeback to disk is started.
const WRITEBACK_BYTES: u64 = 8 << 20;

enum Job {
    Write(Vec<u8>),
    /// Write again after a failure: the buffers that came after the failed
    /// one were returned unwritten.
    Resume,
}

/// A buffer returned by the writing thread, with the bytes of it not written.
struct Done {
    buffer: Vec<u8>,
    written: usize,
}

/// A file written in buffers of a fixed capacity by a thread of its own.
///
/// Bytes are appended in order. A write that fails on the thread is not lost:
/// the bytes it left unwritten, and those of the buffers after it, are kept,
/// and the next [`WriteBehind::reserve`] or [`WriteBehind::flush`] writes them
/// first, returning the error if it happens again.
pub struct WriteBehind {
    file: Arc<File>,
    capacity: usize,
    buffer: Vec<u8>,
    spare: Vec<Vec<u8>>,
    jobs: Option<SyncSender<Job>>,
    done: Receiver<Done>,
    in_flight: usize,
    /// Bytes the thread did not write, in file order, to be written before any other.
    unwritten: Vec<u8>,
    thread: Option<JoinHandle<()>>,
}

impl WriteBehind {
    /// Starts the writing thread of `file`, whose position is its end.
    pub fn new(file: File, capacity: usize) -> io::Result<WriteBehind> {
        let file = Arc::new(file);
        let (jobs, job_receiver) = mpsc::sync_channel(IN_FLIGHT);
        let (done_sender, done) = mpsc::sync_channel(IN_FLIGHT);
        let thread_file = Arc::clone(&file);
        let thread = std::thread::Builder::new()
            .name("segment-writer".into())
            .spawn(move || write_jobs(&thread_file, &job_receiver, &done_sender))?;
        Ok(WriteBehind {
            file,
            capacity,
            buffer: Vec::with_capacity(capacity),
            spare: Vec::new(),
            jobs: Some(jobs),
            done,
            in_flight: 0,
            unwritten: Vec::new(),
            thread: Some(thread),
        })
    }

    /// Returns the file, for syncing it and for positioned writes.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Capacity of a buffer: the largest append that [`WriteBehind::reserve`] makes room for.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Makes room for `needed` bytes in the buffer, at most the capacity.
    ///
    /// On error nothing was appended, and the bytes of earlier appends are
    /// kept for the next call.
    pub fn reserve(&mut self, needed: usize) -> io::Result<()> {
        debug_assert!(needed <= self.capacity);
        while self.receive(false)? {}
        if !self.unwritten.is_empty() {
            self.flush()?;
        }
        if self.capacity - self.buffer.len() < needed {
            self.submit()?;
        }
        Ok(())
    }

    /// Appends `bytes`, for which [`WriteBehind::reserve`] made room.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Writes `bytes` on the calling thread after everything appended before.
    /// For appends larger than the capacity.
    pub fn write_now(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.flush()?;
        (&*self.file).write_all(bytes)
    }

    /// Writes every byte appended so far to the file before returning.
    pub fn flush(&mut self) -> io::Result<()> {
        while self.in_flight > 0 {
            self.receive(true)?;
        }
        if !self.unwritten.is_empty() {
            write_some(&self.file, &mut self.unwritten)?;
            self.send(Job::Resume)?;
        }
        write_some(&self.file, &mut self.buffer)
    }

    /// Writes every byte appended so far, stops the thread and returns the file.
    pub fn finish(mut self) -> io::Result<Arc<File>> {
        self.flush()?;
        self.stop();
        Ok(Arc::clone(&self.file))
    }

    /// Hands the full buffer to the thread, after waiting for a free slot.
    fn submit(&mut self) -> io::Result<()> {
        while self.in_flight >= IN_FLIGHT {
            self.receive(true)?;
        }
        if !self.unwritten.is_empty() {
            return self.flush();
        }
        let next = self.spare.pop().unwrap_or_else(|| Vec::with_capacity(self.capacity));
        let full = std::mem::replace(&mut self.buffer, next);
        self.send(Job::Write(full))?;
        self.in_flight += 1;
        Ok(())
    }

    fn send(&mut self, job: Job) -> io::Result<()> {
        let sent = match &self.jobs {
            Some(jobs) => jobs.send(job),
            None => return Err(stopped()),
        };
        if let Err(mpsc::SendError(job)) = sent {
            // The thread is gone; the bytes stay with the caller.
            if let Job::Write(buffer) = job {
                let next = std::mem::replace(&mut self.buffer, buffer);
                self.spare.push(next);
            }
            return Err(stopped());
        }
        Ok(())
    }

    /// Takes one returned buffer, waiting for it if `wait`. Returns whether
    /// one was taken.
    fn receive(&mut self, wait: bool) -> io::Result<bool> {
        if self.in_flight == 0 {
            return Ok(false);
        }
        let done = if wait {
            self.done.recv().map_err(|_| stopped())?
        } else {
            match self.done.try_recv() {
                Ok(done) => done,
                Err(mpsc::TryRecvError::Empty) => return Ok(false),
                Err(mpsc::TryRecvError::Disconnected) => return Err(stopped()),
            }
        };
        self.in_flight -= 1;
        let Done { mut buffer, written } = done;
        self.unwritten.extend_from_slice(&buffer[written..]);
        buffer.clear();
        self.spare.push(buffer);
        Ok(true)
    }

    fn stop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            // A panic of the thread was already printed by the panic hook, so
            // the join error adds nothing.
            let _ = thread.join();
        }
    }
}

impl Drop for WriteBehind {
    fn drop(&mut self) {
        self.stop();
    }
}

fn stopped() -> io::Error {
    io::Error::other("the thread writing the segment file stopped")
}

/// Writes `bytes` to the end of `file`, removing what was written: on error
/// `bytes` keeps the part not written.
fn write_some(mut file: &File, bytes: &mut Vec<u8>) -> io::Result<()> {
    let mut written = 0;
    let result = write_from(&mut file, bytes, &mut written);
    bytes.drain(..written);
    result
}

fn write_from(file: &mut &File, bytes: &[u8], written: &mut usize) -> io::Result<()> {
    while *written < bytes.len() {
        match file.write(&bytes[*written..]) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(count) => *written += count,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// Runs the writing thread: writes each buffer in order and returns it. After
/// a failed write it returns buffers unwritten until a [`Job::Resume`]
/// arrives, so that the bytes of the file stay in order.
fn write_jobs(file: &Arc<File>, jobs: &Receiver<Job>, done: &SyncSender<Done>) {
    let mut failed = false;
    let mut writeback_started = None;
    for job in jobs {
        let buffer = match job {
            Job::Resume => {
                failed = false;
                continue;
            }
            Job::Write(buffer) => buffer,
        };
        let mut written = 0;
        if !failed {
            failed = write_from(&mut &**file, &buffer, &mut written).is_err();
            if !failed {
                start_writeback(file, &mut writeback_started);
            }
        }
        if done.send(Done { buffer, written }).is_err() {
            return;
        }
    }
}

/// Asks the kernel to start writing the file's bytes to disk once
/// [`WRITEBACK_BYTES`] have gathered since the last time, without waiting
/// for it. The sync when the segment is sealed then waits for the last few
/// megabytes only, instead of for the whole file.
fn start_writeback(file: &File, started: &mut Option<u64>) {
    let Ok(position) = (&*file).stream_position() else { return };
    // Whole pages only: a page under writeback that the next write changes
    // can make that write wait until the page is on disk.
    let end = position & !4095;
    let start = *started.get_or_insert(0);
    if end.saturating_sub(start) < WRITEBACK_BYTES {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor belongs to the open file; the call only
        // reads its arguments. A failure is left to the next sync, which
        // reports it.
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                start as libc::off64_t,
                (end - start) as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
    *started = Some(end);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(path: &std::path::Path) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    #[test]
    fn bytes_arrive_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut writer = WriteBehind::new(File::create(&path).unwrap(), 64).unwrap();
        let mut expected = Vec::new();
        for number in 0..10_000u32 {
            let bytes = number.to_le_bytes();
            let bytes = &bytes[..1 + number as usize % 4];
            writer.reserve(bytes.len()).unwrap();
            writer.push(bytes);
            expected.extend_from_slice(bytes);
            if number % 1_000 == 999 {
                writer.flush().unwrap();
                assert_eq!(written(&path), expected);
            }
        }
        writer.write_now(&[7; 100]).unwrap();
        expected.extend_from_slice(&[7; 100]);
        writer.reserve(3).unwrap();
        writer.push(b"end");
        expected.extend_from_slice(b"end");
        writer.finish().unwrap();
        assert_eq!(written(&path), expected);
    }

    #[test]
    fn failed_writes_keep_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        // Opened for reading only, every write fails with EBADF.
        std::fs::write(&path, b"").unwrap();
        let mut writer = WriteBehind::new(File::open(&path).unwrap(), 16).unwrap();
        let mut failures = 0;
        for number in 0..64u8 {
            match writer.reserve(4) {
                Ok(()) => writer.push(&[number; 4]),
                Err(err) => {
                    assert_eq!(err.raw_os_error(), Some(libc::EBADF), "{err}");
                    failures += 1;
                }
            }
        }
        assert!(failures > 0, "no failed write was reported");
        let retained = writer.unwritten.len() + writer.buffer.len() + writer.in_flight * 16;
        assert_eq!(retained, (64 - failures) * 4, "appended bytes were lost");
        assert!(writer.flush().is_err());
    }
}
