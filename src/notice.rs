//! One path for notices from library code (retries, waits, warnings): `tracing` events, printed
//! on stderr by the command line (as text, or as JSON lines with `--log-format json`), or handed
//! to the dashboard, which shows them in its status line instead of letting them garble the
//! screen.

use std::sync::{Mutex, OnceLock};
use tracing::{Event, Level, Metadata, Subscriber, field::Visit, span};

/// Where notices go.
pub type Sink = Box<dyn Fn(Level, &str) + Send + Sync>;

static SINK: OnceLock<Mutex<Option<Sink>>> = OnceLock::new();

fn sink() -> &'static Mutex<Option<Sink>> {
    SINK.get_or_init(|| Mutex::new(None))
}

/// How notices print on standard error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// `warning: ...`
    #[default]
    Text,
    /// `{"time":"...","level":"warn","target":"kfleet::...","message":"...", ...fields}`
    Json,
}

/// Installs the notice subscriber (once per process; later calls do nothing). Notices print on
/// stderr in `format` until [`redirect`] sends them elsewhere.
pub fn install(format: LogFormat) {
    install_at(format, Level::INFO);
}

/// [`install`], printing notices at `most` and more severe: `WARN` for `-q` (warnings and
/// errors only), `INFO` by default, `DEBUG` for `-v`.
pub fn install_at(format: LogFormat, most: Level) {
    let _ = tracing::subscriber::set_global_default(Notices { format, most });
}

/// Prints the error a command ended with on stderr, in the notices' format.
pub fn print_error(format: LogFormat, message: &str) {
    match format {
        LogFormat::Text => eprintln!("error: {message}"),
        LogFormat::Json => {
            let line = Message {
                text: message.to_string(),
                fields: Vec::new(),
            }
            .json_line(Level::ERROR, "kfleet");
            eprintln!("{line}");
        }
    }
}

/// Sends notices to `to` instead of stderr (the dashboard), or back to stderr with `None`.
pub fn redirect(to: Option<Sink>) {
    *sink().lock().unwrap_or_else(|e| e.into_inner()) = to;
}

struct Notices {
    format: LogFormat,
    most: Level,
}

/// An event's message and its other fields.
#[derive(Default)]
struct Message {
    text: String,
    fields: Vec<(&'static str, String)>,
}

impl Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.text = value.to_string();
        } else {
            self.fields.push((field.name(), value.to_string()));
        }
    }
}

impl Message {
    fn text_line(&self) -> String {
        let mut line = self.text.clone();
        for (k, v) in &self.fields {
            line.push_str(&format!(" {k}={v}"));
        }
        line
    }

    fn json_line(&self, level: Level, target: &str) -> String {
        let mut object = serde_json::Map::new();
        object.insert(
            "time".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                .into(),
        );
        object.insert("level".into(), level.as_str().to_ascii_lowercase().into());
        object.insert("target".into(), target.into());
        object.insert("message".into(), self.text.clone().into());
        for (k, v) in &self.fields {
            object.insert((*k).to_string(), v.clone().into());
        }
        serde_json::Value::Object(object).to_string()
    }
}

impl Subscriber for Notices {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= self.most && metadata.target().starts_with("kfleet")
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
        match (guard.as_ref(), self.format) {
            (Some(to), _) => to(level, &message.text_line()),
            (None, LogFormat::Json) => {
                eprintln!("{}", message.json_line(level, event.metadata().target()));
            }
            (None, LogFormat::Text) => match level {
                Level::ERROR => eprintln!("error: {}", message.text_line()),
                Level::WARN => eprintln!("warning: {}", message.text_line()),
                _ => eprintln!("{}", message.text_line()),
            },
        }
    }
    fn enter(&self, _: &span::Id) {}
    fn exit(&self, _: &span::Id) {}
}
