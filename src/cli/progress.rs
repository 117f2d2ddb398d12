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
    running: Mutex<BTreeMap<String, Step>>,
}

/// A component being worked on: since when, its spinner, and what it shows.
struct Step {
    started: Instant,
    bar: Option<ProgressBar>,
    message: String,
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

impl CliProgress {
    /// Shows `message` for `component`: a new spinner, or the running one's new message. When
    /// piped, a line each time the message changes.
    fn show(&self, component: &str, message: String) {
        let mut running = self.running.lock().expect("progress lock");
        if let Some(step) = running.get_mut(component) {
            if step.message != message {
                match &step.bar {
                    Some(bar) => bar.set_message(message.clone()),
                    None => eprintln!("{message}"),
                }
                step.message = message;
            }
            return;
        }
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
        let step = Step {
            started: Instant::now(),
            bar,
            message,
        };
        running.insert(component.to_owned(), step);
    }
}

impl Progress for CliProgress {
    fn started(&self, component: &str, action: Operation, reason: &str) {
        self.show(
            component,
            format!("{component}: {} ({reason})", action.verb()),
        );
    }

    fn waiting(&self, component: &str, message: &str) {
        self.show(component, format!("{component}: waiting for {message}"));
    }

    fn finished(&self, component: &str, outcome: &Outcome) {
        if matches!(outcome, Outcome::Waiting(_)) {
            // Still on its way: the spinner keeps going until a later round settles it.
            return;
        }
        let mut running = self.running.lock().expect("progress lock");
        let Some(step) = running.remove(component) else {
            return;
        };
        let elapsed = step.started.elapsed().as_secs_f32();
        let message = match outcome {
            Outcome::Failed(why) => format!("{component}: FAILED after {elapsed:.1}s: {why}"),
            _ => format!("{component}: done in {elapsed:.1}s"),
        };
        match step.bar {
            Some(bar) => {
                // The finished line keeps the outcome and drops the spinner and the clock.
                bar.set_style(ProgressStyle::with_template("  {msg}").expect("a valid template"));
                bar.finish_with_message(message);
            }
            None => eprintln!("{message}"),
        }
    }
}
