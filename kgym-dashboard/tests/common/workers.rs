//! Two small stage kinds for the dashboard's tests and bench, run by the
//! gym's real worker runtime beside the stock workers: `note` ends at
//! once (with a title, or a typed failure when asked) and `hold` runs
//! until its job is aborted.

use std::time::Duration;

use kgym::core::stage::StageArgs;
use kgym::core::{StageContext, StageFailure, StageWorker};
use serde::{Deserialize, Serialize};

/// The argument of a `note` stage.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NoteArgs {
    /// The result's title (what listings show as the headline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Fail with the typed failure `note-refused` instead.
    #[serde(default)]
    pub fail: bool,
}

/// The result of a `note` stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NoteResult {
    /// The title it was given.
    pub title: Option<String>,
    /// Lines it logged.
    pub lines: u32,
}

impl StageArgs for NoteArgs {
    const KIND: &'static str = "note";
    type Output = NoteResult;
}

/// Runs `note` stages.
#[derive(Debug)]
pub struct Note;

#[kgym::core::async_trait]
impl StageWorker for Note {
    type Args = NoteArgs;
    async fn run(&self, args: NoteArgs, ctx: &StageContext) -> Result<NoteResult, StageFailure> {
        ctx.log("note: taking a note");
        if args.fail {
            return Err(StageFailure::new("note-refused", "the note was refused").with_detail("asked to fail"));
        }
        ctx.log("note: done");
        Ok(NoteResult { title: args.title, lines: 2 })
    }
}

/// The argument of a `hold` stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HoldArgs {
    /// Seconds to hold at most (a safety net: the test aborts it first).
    pub seconds: u64,
}

impl StageArgs for HoldArgs {
    const KIND: &'static str = "hold";
    type Output = u64;
}

/// Runs `hold` stages: logs a line a second until cancelled.
#[derive(Debug)]
pub struct Hold;

#[kgym::core::async_trait]
impl StageWorker for Hold {
    type Args = HoldArgs;
    async fn run(&self, args: HoldArgs, ctx: &StageContext) -> Result<u64, StageFailure> {
        for i in 0..args.seconds {
            ctx.log(format!("hold: second {i}"));
            tokio::select! {
                _ = ctx.cancel.cancelled() => return Err(StageFailure::cancelled()),
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        Ok(args.seconds)
    }
}
