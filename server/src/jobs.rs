//! Queued extraction jobs.
//!
//! Jobs live in a RocksDB database at `DATA_DIR/extractions/jobs.rocksdb`,
//! their output files in `DATA_DIR/extractions/<id>/`. A scheduler task starts
//! waiting jobs, oldest first, while fewer than `max_running` run and job
//! outputs use less than `max_disk_bytes`. Each job runs on a blocking thread
//! and writes pcap files of at most `max_file_bytes`. Every change of state is
//! a synced write, so after a restart no job is left in `processing`: one that
//! was running is marked failed and its partial files are removed.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pktvault_engine::extract::{
    check_bpf, extract_to, ExtractControl, ExtractOutcomeError, ExtractRequest, PcapSink, Selection,
};
use pktvault_engine::status::unix_now_ns;
use pktvault_engine::store::interface_dir;
use pktvault_engine::Error;
use pktvault_schema::jobs::{
    job_key, ExtractionJob, JobFile, JobStatus, JOBS_FORMAT_KEY, JOBS_FORMAT_VERSION, JOBS_MAGIC, NEXT_JOB_ID_KEY,
};
use pktvault_schema::FormatMarker;
use tokio::sync::{watch, Notify};

use crate::error::ApiError;
use crate::extraction::{engine_error, outcome_error, selection};
use crate::params::ExtractionParams;
use crate::stores::Stores;

/// Limits on jobs.
#[derive(Debug, Clone, Copy)]
pub struct JobLimits {
    /// Jobs processing at the same time.
    pub max_running: usize,
    /// Bytes that the output files of all jobs may use together.
    pub max_disk_bytes: u64,
    /// Size at which a job's output continues in a new file.
    pub max_file_bytes: u64,
}

impl Default for JobLimits {
    fn default() -> Self {
        JobLimits { max_running: 2, max_disk_bytes: 10 << 30, max_file_bytes: 1 << 30 }
    }
}

struct Running {
    control: Arc<ExtractControl>,
    done: watch::Receiver<bool>,
}

/// The job queue of one data directory.
pub struct Jobs {
    db: rocksdb::DB,
    data_dir: PathBuf,
    stores: Arc<Stores>,
    out_dir: PathBuf,
    limits: JobLimits,
    /// Serializes every read-modify-write of a job record.
    running: Mutex<HashMap<u64, Running>>,
    /// Bytes of job output files on disk.
    used_bytes: AtomicU64,
    wake: Notify,
}

fn db_error(path: &Path) -> impl Fn(rocksdb::Error) -> String + '_ {
    move |err| format!("jobs database {}: {err}", path.display())
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(|entry| entry.ok())
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

impl Jobs {
    /// Opens the jobs database of `data_dir`, creating it when missing, and
    /// settles the jobs an earlier server left running.
    pub fn open(data_dir: &Path, stores: Arc<Stores>, limits: JobLimits) -> Result<Arc<Jobs>, String> {
        let out_dir = data_dir.join("extractions");
        std::fs::create_dir_all(&out_dir).map_err(|err| format!("cannot create {}: {err}", out_dir.display()))?;
        let db_path = out_dir.join("jobs.rocksdb");
        let mut options = rocksdb::Options::default();
        options.create_if_missing(true);
        let db = rocksdb::DB::open(&options, &db_path).map_err(|err| {
            if err.to_string().contains("LOCK") {
                format!(
                    "the jobs database {} is in use by another server on the same data directory \
                     ('pktvault serve' or 'pktvault record --serve'); stop it, or serve this data directory \
                     from one process only",
                    db_path.display()
                )
            } else {
                format!("jobs database {}: {err}", db_path.display())
            }
        })?;
        match db.get(JOBS_FORMAT_KEY).map_err(db_error(&db_path))? {
            Some(bytes) => {
                let marker: FormatMarker = serde_json::from_slice(&bytes)
                    .map_err(|err| format!("jobs database {}: damaged format marker: {err}", db_path.display()))?;
                if marker.magic != JOBS_MAGIC || marker.version != JOBS_FORMAT_VERSION {
                    return Err(format!(
                        "jobs database {} has format {:?} version {}, and this build reads {JOBS_MAGIC:?} version {JOBS_FORMAT_VERSION}; \
                         use the pktvault release that wrote it, or move the folder {} away to start with no jobs",
                        db_path.display(),
                        marker.magic,
                        marker.version,
                        out_dir.display()
                    ));
                }
            }
            None => {
                let marker = FormatMarker { magic: JOBS_MAGIC.to_string(), version: JOBS_FORMAT_VERSION };
                db.put(JOBS_FORMAT_KEY, serde_json::to_vec(&marker).expect("serializes"))
                    .map_err(db_error(&db_path))?;
            }
        }
        let jobs = Jobs {
            db,
            data_dir: data_dir.to_path_buf(),
            stores,
            used_bytes: AtomicU64::new(dir_bytes(&out_dir).saturating_sub(dir_bytes(&db_path))),
            out_dir,
            limits,
            running: Mutex::new(HashMap::new()),
            wake: Notify::new(),
        };
        for mut job in jobs.all().map_err(|err| err.message)? {
            match job.status {
                JobStatus::Processing => {
                    tracing::warn!(job = job.id, "job was processing when the server stopped; marking it failed");
                    jobs.remove_files(job.id);
                    job.status = JobStatus::Failed;
                    job.reason = Some(
                        "the server stopped while this job was processing; its partial output was removed; submit the job again"
                            .to_string(),
                    );
                    job.files.clear();
                    job.finished_ns = Some(unix_now_ns());
                    jobs.save(&job).map_err(|err| err.message)?;
                }
                JobStatus::WaitingNospace => {
                    job.status = JobStatus::Waiting;
                    jobs.save(&job).map_err(|err| err.message)?;
                }
                _ => {}
            }
        }
        Ok(Arc::new(jobs))
    }

    pub fn limits(&self) -> JobLimits {
        self.limits
    }

    /// Bytes of job output files on disk.
    pub fn used_bytes(&self) -> u64 {
        self.used_bytes.load(Ordering::Relaxed)
    }

    fn save(&self, job: &ExtractionJob) -> Result<(), ApiError> {
        let mut options = rocksdb::WriteOptions::default();
        options.set_sync(true);
        self.db
            .put_opt(job_key(job.id), serde_json::to_vec(job).expect("a job serializes"), &options)
            .map_err(|err| ApiError::internal(format!("cannot store job {}: {err}", job.id)))
    }

    fn load(&self, id: u64) -> Result<Option<ExtractionJob>, ApiError> {
        let Some(bytes) = self.db.get(job_key(id)).map_err(|err| ApiError::internal(format!("job {id}: {err}")))?
        else {
            return Ok(None);
        };
        let job: ExtractionJob = serde_json::from_slice(&bytes)
            .map_err(|err| ApiError::internal(format!("stored job {id} is damaged: {err}")))?;
        Ok(Some(job))
    }

    fn all(&self) -> Result<Vec<ExtractionJob>, ApiError> {
        let mut jobs = Vec::new();
        for item in self.db.prefix_iterator(b"J") {
            let (key, value) = item.map_err(|err| ApiError::internal(format!("cannot list jobs: {err}")))?;
            if !key.starts_with(b"J") {
                break;
            }
            let job: ExtractionJob = serde_json::from_slice(&value)
                .map_err(|err| ApiError::internal(format!("a stored job is damaged: {err}")))?;
            jobs.push(job);
        }
        Ok(jobs)
    }

    /// Fills in the live progress of a processing job.
    fn with_progress(&self, mut job: ExtractionJob, running: &HashMap<u64, Running>) -> ExtractionJob {
        if let (JobStatus::Processing, Some(run)) = (job.status, running.get(&job.id)) {
            job.progress = run.control.progress();
            job.packets = run.control.packets();
            job.bytes = run.control.bytes();
        }
        job
    }

    /// Queues a new job. The filter is checked now, libpcap filters against
    /// the interface's link types; the window's data is checked when it runs.
    pub fn create(
        &self,
        ifid: u32,
        params: &ExtractionParams,
        user: Option<String>,
    ) -> Result<ExtractionJob, ApiError> {
        let selection = selection(&params.filter, params.syntax)?;
        if !interface_dir(&self.data_dir, ifid).join("index").is_dir() {
            return Err(engine_error(Error::NoInterface { ifid, data_dir: self.data_dir.clone() }));
        }
        if let Selection::Bpf(mut filter) = selection {
            let store = self.stores.get(ifid).map_err(engine_error)?;
            check_bpf(&store, &mut filter).map_err(engine_error)?;
        }

        let _guard = self.running.lock().expect("lock");
        let id = match self.db.get(NEXT_JOB_ID_KEY).map_err(|err| ApiError::internal(err.to_string()))? {
            Some(bytes) if bytes.len() == 8 => u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes")),
            // Starting again at 1 would overwrite the existing jobs.
            Some(bytes) => {
                tracing::error!(length = bytes.len(), "the stored next job id is damaged");
                return Err(ApiError::internal(format!(
                    "the stored next job id is {} bytes instead of 8; the jobs database is damaged",
                    bytes.len()
                )));
            }
            None => 1,
        };
        let mut options = rocksdb::WriteOptions::default();
        options.set_sync(true);
        self.db
            .put_opt(NEXT_JOB_ID_KEY, (id + 1).to_be_bytes(), &options)
            .map_err(|err| ApiError::internal(format!("cannot store the next job id: {err}")))?;

        let job = ExtractionJob {
            version: JOBS_FORMAT_VERSION,
            id,
            ifid,
            begin_ns: params.window.begin_ns,
            end_ns: params.window.end_ns,
            filter: params.filter.clone(),
            filter_syntax: params.syntax,
            linktype: params.linktype,
            status: JobStatus::Waiting,
            reason: None,
            created_ns: unix_now_ns(),
            started_ns: None,
            finished_ns: None,
            progress: 0.0,
            packets: 0,
            bytes: 0,
            files: Vec::new(),
            user,
        };
        self.save(&job)?;
        self.wake.notify_one();
        Ok(job)
    }

    pub fn list(&self) -> Result<Vec<ExtractionJob>, ApiError> {
        let running = self.running.lock().expect("lock");
        Ok(self.all()?.into_iter().map(|job| self.with_progress(job, &running)).collect())
    }

    pub fn get(&self, id: u64) -> Result<ExtractionJob, ApiError> {
        let running = self.running.lock().expect("lock");
        let job = self.load(id)?.ok_or_else(|| unknown_job(id))?;
        Ok(self.with_progress(job, &running))
    }

    /// Stops a waiting or processing job; a processing one keeps the files
    /// written so far. Returns the job once it has stopped.
    pub async fn stop(&self, id: u64) -> Result<ExtractionJob, ApiError> {
        let done = {
            let running = self.running.lock().expect("lock");
            let mut job = self.load(id)?.ok_or_else(|| unknown_job(id))?;
            match (job.status, running.get(&id)) {
                (JobStatus::Processing, Some(run)) => {
                    run.control.cancel();
                    Some(run.done.clone())
                }
                (JobStatus::Waiting | JobStatus::WaitingNospace, _) => {
                    job.status = JobStatus::Stopped;
                    job.reason = Some("stopped on request before it started".to_string());
                    job.finished_ns = Some(unix_now_ns());
                    self.save(&job)?;
                    None
                }
                (status, _) => {
                    return Err(ApiError::conflict(
                        "job_finished",
                        format!("job {id} is {}; only waiting or processing jobs can be stopped", status_name(status)),
                    ))
                }
            }
        };
        if let Some(done) = done {
            wait_done(done).await;
        }
        self.get(id)
    }

    /// Removes a job and its files, stopping it first when it runs.
    pub async fn delete(&self, id: u64) -> Result<(), ApiError> {
        let done = {
            let running = self.running.lock().expect("lock");
            self.load(id)?.ok_or_else(|| unknown_job(id))?;
            running.get(&id).map(|run| {
                run.control.cancel();
                run.done.clone()
            })
        };
        if let Some(done) = done {
            wait_done(done).await;
        }
        let _guard = self.running.lock().expect("lock");
        self.db.delete(job_key(id)).map_err(|err| ApiError::internal(format!("cannot delete job {id}: {err}")))?;
        self.remove_files(id);
        self.wake.notify_one();
        Ok(())
    }

    fn job_dir(&self, id: u64) -> PathBuf {
        self.out_dir.join(id.to_string())
    }

    fn remove_files(&self, id: u64) {
        let dir = self.job_dir(id);
        let bytes = dir_bytes(&dir);
        if let Err(err) = std::fs::remove_dir_all(&dir) {
            if err.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(job = id, "cannot remove {}: {err}", dir.display());
                return;
            }
        }
        self.used_bytes.fetch_sub(bytes.min(self.used_bytes()), Ordering::Relaxed);
    }

    /// Returns the path and name of output file `number` of job `id`.
    pub fn file(&self, id: u64, number: Option<u32>) -> Result<(PathBuf, JobFile), ApiError> {
        let job = self.get(id)?;
        if job.status == JobStatus::Failed {
            return Err(ApiError::conflict(
                "job_failed",
                format!(
                    "job {id} failed and has no output: {}",
                    job.reason.as_deref().unwrap_or("no reason was recorded")
                ),
            ));
        }
        if !matches!(job.status, JobStatus::Completed | JobStatus::Stopped) {
            return Err(ApiError::conflict(
                "job_not_finished",
                format!(
                    "job {id} is {}; its pcap can be downloaded when it is completed or stopped",
                    status_name(job.status)
                ),
            ));
        }
        let number = match (number, job.files.len()) {
            (Some(number), _) => number,
            (None, 1) => 1,
            (None, 0) => {
                return Err(ApiError::not_found("no_files", format!("job {id} has no output file")));
            }
            (None, count) => {
                return Err(ApiError::bad_request(
                    "missing_parameter",
                    format!("job {id} wrote {count} files; choose one with the parameter file=1 to file={count}"),
                ))
            }
        };
        let file = job.files.iter().find(|file| file.number == number).cloned().ok_or_else(|| {
            ApiError::not_found(
                "no_such_file",
                format!("job {id} has no file {number}; it has files 1 to {}", job.files.len()),
            )
        })?;
        Ok((self.job_dir(id).join(&file.name), file))
    }

    /// Starts waiting jobs as long as the limits allow; runs until the process ends.
    pub async fn run_scheduler(self: Arc<Self>) {
        loop {
            if let Err(err) = self.start_waiting() {
                tracing::error!("job scheduler: {}", err.message);
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    fn start_waiting(self: &Arc<Self>) -> Result<(), ApiError> {
        let mut running = self.running.lock().expect("lock");
        let waiting: Vec<ExtractionJob> = self
            .all()?
            .into_iter()
            .filter(|job| matches!(job.status, JobStatus::Waiting | JobStatus::WaitingNospace))
            .collect();
        for mut job in waiting {
            let (status, reason) = if running.len() >= self.limits.max_running {
                (
                    JobStatus::Waiting,
                    Some(format!(
                        "{} jobs are processing and at most {} run at once (--max-jobs)",
                        running.len(),
                        self.limits.max_running
                    )),
                )
            } else if self.used_bytes() >= self.limits.max_disk_bytes {
                (
                    JobStatus::WaitingNospace,
                    Some(format!(
                        "job outputs use {} bytes and may use {} (--job-disk); delete finished jobs to free space",
                        self.used_bytes(),
                        self.limits.max_disk_bytes
                    )),
                )
            } else {
                (JobStatus::Processing, None)
            };
            if status != JobStatus::Processing {
                if job.status != status || job.reason != reason {
                    job.status = status;
                    job.reason = reason;
                    self.save(&job)?;
                }
                continue;
            }
            job.status = JobStatus::Processing;
            job.reason = None;
            job.started_ns = Some(unix_now_ns());
            self.save(&job)?;
            let control = Arc::new(ExtractControl::default());
            let (done_tx, done_rx) = watch::channel(false);
            running.insert(job.id, Running { control: control.clone(), done: done_rx });
            let jobs = Arc::clone(self);
            tokio::task::spawn_blocking(move || {
                let id = job.id;
                let finished = jobs.run(job, &control);
                let mut running = jobs.running.lock().expect("lock");
                if let Err(err) = jobs.save(&finished) {
                    tracing::error!(job = id, "{}", err.message);
                }
                running.remove(&id);
                drop(running);
                let _ = done_tx.send(true);
                jobs.wake.notify_one();
            });
        }
        Ok(())
    }

    /// Runs one job to its end and returns its final record.
    fn run(&self, mut job: ExtractionJob, control: &ExtractControl) -> ExtractionJob {
        let dir = self.job_dir(job.id);
        let result = (|| -> Result<_, ApiError> {
            let store = self.stores.get(job.ifid).map_err(engine_error)?;
            let mut request = ExtractRequest {
                window: pktvault_schema::time::TimeWindow { begin_ns: job.begin_ns, end_ns: job.end_ns },
                selection: selection(&job.filter, job.filter_syntax)?,
                linktype: job.linktype,
            };
            std::fs::create_dir_all(&dir)
                .map_err(|err| ApiError::internal(format!("cannot create {}: {err}", dir.display())))?;
            let mut sink = SplitSink::new(self, job.id, dir.clone());
            let outcome = extract_to(&store, &mut request, &mut sink, control);
            let files = sink.close();
            Ok((outcome, files))
        })();
        job.finished_ns = Some(unix_now_ns());
        job.progress = control.progress();
        match result {
            Ok((Ok(stats), files)) => {
                job.status = JobStatus::Completed;
                job.progress = 1.0;
                job.packets = stats.packets;
                job.bytes = files.iter().map(|file| file.bytes).sum();
                job.files = files;
            }
            Ok((Err(ExtractOutcomeError::Engine(Error::Cancelled)), files)) => {
                job.status = JobStatus::Stopped;
                job.reason = Some("stopped on request; the packets extracted until then are kept".to_string());
                job.packets = files.iter().map(|file| file.packets).sum();
                job.bytes = files.iter().map(|file| file.bytes).sum();
                job.files = files;
            }
            Ok((Err(err), _)) => {
                job.status = JobStatus::Failed;
                job.reason = Some(outcome_error(err).message);
                self.remove_files(job.id);
            }
            Err(err) => {
                job.status = JobStatus::Failed;
                job.reason = Some(err.message);
                self.remove_files(job.id);
            }
        }
        if let (JobStatus::Failed, Some(reason)) = (job.status, &job.reason) {
            tracing::warn!(job = job.id, ifid = job.ifid, "extraction job failed: {reason}");
        }
        job
    }
}

async fn wait_done(mut done: watch::Receiver<bool>) {
    let _ = done.wait_for(|finished| *finished).await;
}

fn unknown_job(id: u64) -> ApiError {
    ApiError::not_found("unknown_job", format!("there is no job {id}; GET /api/v1/extractions lists the jobs"))
}

pub fn status_name(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Waiting => "waiting",
        JobStatus::WaitingNospace => "waiting_nospace",
        JobStatus::Processing => "processing",
        JobStatus::Completed => "completed",
        JobStatus::Failed => "failed",
        JobStatus::Stopped => "stopped",
    }
}

/// Writes a job's pcap into numbered files of at most `max_file_bytes` each
/// (a file always contains at least one packet), within the jobs' disk limit.
struct SplitSink<'a> {
    jobs: &'a Jobs,
    id: u64,
    dir: PathBuf,
    file_header: [u8; 24],
    current: Option<BufWriter<File>>,
    files: Vec<JobFile>,
}

impl<'a> SplitSink<'a> {
    fn new(jobs: &'a Jobs, id: u64, dir: PathBuf) -> SplitSink<'a> {
        SplitSink { jobs, id, dir, file_header: [0; 24], current: None, files: Vec::new() }
    }

    fn reserve(&self, bytes: u64) -> std::io::Result<()> {
        let limit = self.jobs.limits.max_disk_bytes;
        let used = self.jobs.used_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if used > limit {
            self.jobs.used_bytes.fetch_sub(bytes, Ordering::Relaxed);
            return Err(std::io::Error::other(format!(
                "job outputs would use more than {limit} bytes (--job-disk); delete finished jobs, raise --job-disk, \
                 or narrow the window or filter"
            )));
        }
        Ok(())
    }

    fn open_next(&mut self) -> std::io::Result<()> {
        if let Some(mut file) = self.current.take() {
            file.flush()?;
        }
        let number = self.files.len() as u32 + 1;
        let name = format!("extraction-{}-{number:04}.pcap", self.id);
        let file = File::create(self.dir.join(&name))?;
        self.reserve(24)?;
        let mut file = BufWriter::with_capacity(1 << 20, file);
        file.write_all(&self.file_header)?;
        self.files.push(JobFile { number, name, packets: 0, bytes: 24 });
        self.current = Some(file);
        Ok(())
    }

    /// Flushes the open file and returns the files written.
    fn close(mut self) -> Vec<JobFile> {
        if let Some(mut file) = self.current.take() {
            if let Err(err) = file.flush() {
                tracing::warn!(job = self.id, "cannot flush the output: {err}");
            }
        }
        self.files
    }
}

impl PcapSink for SplitSink<'_> {
    fn header(&mut self, file_header: &[u8; 24]) -> std::io::Result<()> {
        self.file_header = *file_header;
        self.open_next()
    }

    fn record(&mut self, record_header: &[u8; 16], data: &[u8]) -> std::io::Result<()> {
        let size = 16 + data.len() as u64;
        let full = self
            .files
            .last()
            .is_some_and(|file| file.packets > 0 && file.bytes + size > self.jobs.limits.max_file_bytes);
        if full {
            self.open_next()?;
        }
        self.reserve(size)?;
        let file = self.current.as_mut().expect("a file is open after the header");
        file.write_all(record_header)?;
        file.write_all(data)?;
        let entry = self.files.last_mut().expect("a file is open");
        entry.packets += 1;
        entry.bytes += size;
        Ok(())
    }

    fn finish(&mut self) -> std::io::Result<()> {
        match self.current.as_mut() {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}
