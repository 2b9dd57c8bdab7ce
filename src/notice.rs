//! One path for notices from library code (retries, waits, warnings): `tracing` events, printed
//! on stderr by the command line, or handed to the dashboard, which shows them in its status
//! line instead of letting them garble the screen.

use std::sync::{Mutex, OnceLock};
use tracing::{Event, Level, Metadata, Subscriber, field::Visit, span};

/// Where notices go.
pub type Sink = Box<dyn Fn(Level, &str) + Send + Sync>;

static SINK: OnceLock<Mutex<Option<Sink>>> = OnceLock::new();

fn sink() -> &'static Mutex<Option<Sink>> {
    SINK.get_or_init(|| Mutex::new(None))
}

/// Installs the notice subscriber (once per process; later calls do nothing). Notices print on
/// stderr as `warning: ...` until [`redirect`] sends them elsewhere.
pub fn install() {
    let _ = tracing::subscriber::set_global_default(Notices);
}

/// Sends notices to `to` instead of stderr (the dashboard), or back to stderr with `None`.
pub fn redirect(to: Option<Sink>) {
    *sink().lock().unwrap_or_else(|e| e.into_inner()) = to;
}

struct Notices;

#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_string();
        }
    }
}

impl Subscriber for Notices {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= Level::INFO && metadata.target().starts_with("kfleet")
    }
    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }
    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut message = Message::default();
        event.record(&mut message);
        let level = *event.metadata().level();
        let guard = sink().lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(to) => to(level, &message.0),
            None => match level {
                Level::ERROR => eprintln!("error: {}", message.0),
                Level::WARN => eprintln!("warning: {}", message.0),
                _ => eprintln!("{}", message.0),
            },
        }
    }
    fn enter(&self, _: &span::Id) {}
    fn exit(&self, _: &span::Id) {}
}
