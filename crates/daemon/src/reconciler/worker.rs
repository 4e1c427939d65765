//! The single worker: one job at a time, its mode decided when it starts,
//! run by the engine on its own task.

use std::sync::Arc;
use std::time::Instant;

use homestak_api::v1::Running;
use homestak_api::{Event, Kind, Level, Mode, Outcome};
use homestak_base::time::Timestamp;
use homestak_engine::reconcile::{self, Options, Request, RunOf, RunOutcome};

use super::queue::Job;
use super::{Entry, Reconciler, decide_mode, error_chain};
use crate::source::short;

/// What a job runs: its entry, mode and the generation it answers.
struct Run<'a> {
    job: &'a Job,
    entry: &'a Entry,
    mode: Mode,
    generation: u64,
    started: Timestamp,
    clock: Instant,
}

impl Reconciler {
    /// Runs jobs one at a time until shutdown. A job in progress when
    /// shutdown starts is left to finish (the engine sees the signal and
    /// stops at a safe point).
    pub async fn run_worker(self: Arc<Self>) {
        let mut shutdown = self.shutdown.clone();
        loop {
            let job = tokio::select! {
                biased;
                () = shutdown.triggered() => break,
                job = self.pop() => job,
            };
            self.run_job(job).await;
        }
        tracing::debug!("reconcile worker stopped");
    }

    async fn run_job(&self, job: Job) {
        // The record (and its generation) before the entry: see the module docs.
        let record = self.record(&job.name);
        let Some(entry) = self.read_desired().entries.get(&job.name).cloned() else {
            self.events
                .emit(Event::info(Kind::ReconcileSkipped, "no longer managed").manifest(&job.name));
            return;
        };
        if entry.suspended {
            self.events
                .emit(Event::info(Kind::ReconcileSkipped, "suspended").manifest(&job.name));
            return;
        }
        let mode = if entry.destroying {
            Mode::Destroy
        } else {
            decide_mode(
                job.reason,
                entry.drift,
                &entry.revision,
                record.last_applied.as_ref(),
            )
        };
        let run = Run {
            job: &job,
            entry: &entry,
            mode,
            generation: record.generation,
            started: Timestamp::now(),
            clock: Instant::now(),
        };
        let ran = self.run_engine(&run).await;
        if let Err(why) = &ran {
            self.record_unstarted(&run, why);
        }
        self.finished(&run, &ran);
    }

    /// Hands the job to the engine, or says why it could not start.
    async fn run_engine(&self, run: &Run<'_>) -> Result<RunOutcome, String> {
        let (job, entry, mode) = (run.job, run.entry, run.mode);
        let (manifest, host) = match (&entry.manifest, &entry.host) {
            (Err(problem), _) => return Err(problem.clone()),
            (Ok(_), None) => {
                return Err(format!(
                    "no target host for '{}': set `host` in controller.yaml or pass --host",
                    entry.name
                ));
            }
            (Ok(manifest), Some(host)) => (manifest, host),
        };
        self.events.emit(
            Event::info(
                Kind::ReconcileStarted,
                format!(
                    "{} at {} on {host} ({})",
                    mode.verb(),
                    short(&entry.revision),
                    job.reason.as_str()
                ),
            )
            .manifest(&entry.name),
        );
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = Some(Running {
            manifest: entry.name.clone(),
            since: run.started,
        });
        let request = Request {
            manifest: Arc::clone(manifest),
            host: host.clone(),
            site: self.site.get(),
            revision: Some(entry.revision.clone()),
            reason: job.reason,
            mode,
            options: Options {
                spec_ca: self.spec_ca.clone(),
                deep: job.deep,
                ..Options::default()
            },
            generation: run.generation,
        };
        // On its own task, so a panicking engine fails this job
        // instead of killing the worker.
        let engine = Arc::clone(&self.engine);
        let shutdown = self.shutdown.clone();
        let result = tokio::spawn(async move { engine.reconcile(request, shutdown).await }).await;
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = None;
        match result {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(err)) => Err(error_chain(&err)),
            Err(join) => {
                tracing::error!(manifest = %entry.name, error = %join, "the engine panicked");
                Err("the engine panicked; see the daemon's log".to_string())
            }
        }
    }

    /// The engine records the runs it makes; this one never got there.
    fn record_unstarted(&self, run: &Run<'_>, why: &str) {
        let what = RunOf {
            manifest: &run.entry.name,
            revision: Some(&run.entry.revision),
            reason: run.job.reason,
            mode: run.mode,
            generation: run.generation,
        };
        let outcome = RunOutcome::failed(why.to_string(), run.started, run.clock.elapsed());
        if let Err(err) = reconcile::record_run(self.store.as_ref(), &what, &outcome) {
            tracing::error!(error = %error_chain(&err), "cannot record a reconcile");
        }
    }

    /// Metrics, the finished event, and forgetting a destroyed subtree.
    fn finished(&self, run: &Run<'_>, ran: &Result<RunOutcome, String>) {
        let entry = run.entry;
        let (outcome, changed, drifted, message) = match ran {
            Ok(done) => (
                done.outcome,
                done.changed_nodes,
                done.drifted_nodes,
                done.message.clone(),
            ),
            Err(why) => (Outcome::Failed, 0, 0, Some(why.clone())),
        };
        self.metrics.reconciled(
            &entry.name,
            outcome,
            run.clock.elapsed().as_secs_f64(),
            ran.as_ref().ok(),
        );
        let level = match outcome {
            Outcome::Converged => Level::Info,
            Outcome::Drifted | Outcome::Interrupted => Level::Warning,
            Outcome::Failed => Level::Error,
        };
        let mut text = format!("{outcome}: {changed} changed, {drifted} drifted");
        if let Some(why) = &message {
            text.push_str(": ");
            text.push_str(why);
        }
        tracing::info!(manifest = %entry.name, outcome = outcome.as_str(), "reconcile finished");
        self.events
            .emit(Event::new(level, Kind::ReconcileFinished, text).manifest(&entry.name));
        if run.mode == Mode::Destroy && outcome == Outcome::Converged {
            self.forget_destroyed(&entry.name, run.generation);
        }
    }
}
