//! Progress of long CLI work on stderr: a spinner with elapsed time per component on a terminal,
//! one plain line per step when piped, so logs stay readable.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use smm::engine::decide::Operation;
use smm::engine::report::{Outcome, Progress};

pub struct CliProgress {
    bars: Option<MultiProgress>,
    running: Mutex<BTreeMap<String, (Instant, Option<ProgressBar>)>>,
}

impl CliProgress {
    pub fn new(no_color: bool) -> Self {
        let interactive = std::io::stderr().is_terminal() && !no_color;
        Self {
            bars: interactive.then(MultiProgress::new),
            running: Mutex::default(),
        }
    }
}

impl Progress for CliProgress {
    fn started(&self, component: &str, action: Operation, reason: &str) {
        let message = format!("{component}: {} ({reason})", action.verb());
        let bar = self.bars.as_ref().map(|bars| {
            let bar = bars.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                    .expect("a valid template"),
            );
            bar.set_message(message.clone());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        if bar.is_none() {
            eprintln!("{message}");
        }
        let mut running = self.running.lock().expect("progress lock");
        running.insert(component.to_owned(), (Instant::now(), bar));
    }

    fn finished(&self, component: &str, outcome: &Outcome) {
        let mut running = self.running.lock().expect("progress lock");
        let Some((started, bar)) = running.remove(component) else {
            return;
        };
        let elapsed = started.elapsed().as_secs_f32();
        let message = match outcome {
            Outcome::Done => format!("{component}: done in {elapsed:.1}s"),
            Outcome::Waiting(why) => format!("{component}: {why} ({elapsed:.1}s)"),
            Outcome::Failed(why) => format!("{component}: FAILED after {elapsed:.1}s: {why}"),
        };
        match bar {
            Some(bar) => {
                // The finished line keeps the outcome and drops the spinner and the clock.
                bar.set_style(ProgressStyle::with_template("  {msg}").expect("a valid template"));
                bar.finish_with_message(message);
            }
            None => eprintln!("{message}"),
        }
    }
}
