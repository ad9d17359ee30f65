//! A new stage kind in ~20 lines: a typed argument, a typed result and a
//! worker, run in a gym beside (or instead of) the stock stages. Its
//! argument is checked at submit, before anything runs.
//!
//! `cargo run --example custom_stage` (no kernel needed).

use std::sync::Arc;

use kgym::core::stage::StageArgs;
use kgym::core::{JobSpec, StageContext, StageFailure, StageWorker};
use kgym::sched::SchedulerExt;
use serde::{Deserialize, Serialize};

/// Counts the lines of a console log that mention a pattern.
#[derive(Serialize, Deserialize)]
pub struct CountArgs {
    /// What to look for.
    pub pattern: String,
    /// Where to look.
    pub log: String,
}

impl StageArgs for CountArgs {
    const KIND: &'static str = "count-lines";
    type Output = usize;
    fn check(&self) -> Vec<String> {
        if self.pattern.is_empty() { vec!["pattern is empty".into()] } else { vec![] }
    }
}

/// The worker of `count-lines` stages.
#[derive(Debug)]
pub struct CountLines;

#[kgym::core::async_trait]
impl StageWorker for CountLines {
    type Args = CountArgs;
    async fn run(&self, args: CountArgs, ctx: &StageContext) -> Result<usize, StageFailure> {
        ctx.log(format!("counting {:?}", args.pattern));
        Ok(args.log.lines().filter(|l| l.contains(&args.pattern)).count())
    }
}

/// Runs one `count-lines` job in a throw-away gym and returns its result;
/// a bad argument is refused at submit.
pub async fn run() -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
    let dir = tempfile::tempdir()?;
    let gym = kgym::Gym::builder(dir.path()).stock_workers(false).worker(Arc::new(CountLines), 1).start().await?;
    let sched = gym.scheduler();
    let bad = CountArgs { pattern: String::new(), log: String::new() };
    let refused = sched.submit(JobSpec::new().stage(CountArgs::kind(), &bad)).await.unwrap_err();
    println!("refused at submit: {refused}");
    let log = "boot\nBUG: KASAN: use-after-free\nCall Trace:\nBUG: KASAN: again\n".to_owned();
    let job = sched.run(JobSpec::new().stage(CountArgs::kind(), &CountArgs { pattern: "KASAN".into(), log })).await?;
    gym.shutdown().await;
    Ok(job.results[0].decode()?)
}

#[allow(dead_code)] // also compiled as a module of tests/custom_stage.rs
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    println!("lines mentioning KASAN: {}", run().await?);
    Ok(())
}
