//! Progress display of a running job: one spinner per stage showing its
//! latest log line (hidden when stderr is not a terminal).

use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kgym::core::{Job, JobStatus, Outcome, StageIndex};

/// Spinners of one job's stages.
pub struct JobProgress {
    multi: MultiProgress,
    bars: Vec<ProgressBar>,
}

impl JobProgress {
    /// One (waiting) spinner per stage of `job`.
    pub fn new(job: &Job) -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {prefix:.bold} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let bars = job
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(style.clone());
                bar.set_prefix(format!("job {} stage {i} {}", job.id, s.kind));
                bar.set_message("waiting");
                bar
            })
            .collect();
        Self { multi, bars }
    }

    /// A status change: the current stage's spinner starts ticking.
    pub fn status(&mut self, status: JobStatus, stage: Option<StageIndex>) {
        if let Some(bar) = stage.and_then(|s| self.bars.get(s.as_usize())) {
            if status == JobStatus::InProgress {
                bar.enable_steady_tick(Duration::from_millis(120));
                bar.set_message("running");
            } else {
                bar.set_message(status.as_str().replace('_', " "));
            }
        }
    }

    /// A log line of `stage` (or of the scheduler).
    pub fn log(&mut self, stage: Option<StageIndex>, line: &str) {
        match stage.and_then(|s| self.bars.get(s.as_usize())) {
            Some(bar) => bar.set_message(line.trim().to_owned()),
            None => self.message(line),
        }
    }

    /// A line printed above the spinners.
    pub fn message(&self, line: &str) {
        let _ = self.multi.println(line);
    }

    /// Marks every stage done with its outcome.
    pub fn finish(&mut self, job: &Job) {
        for (i, bar) in self.bars.iter().enumerate() {
            let msg = match job.results.get(i) {
                Some(r) if r.outcome == Outcome::Success => format!("done: {}", r.message),
                Some(r) => format!("failed: {}", r.message),
                None => "not run".to_owned(),
            };
            bar.finish_with_message(msg);
        }
    }
}
