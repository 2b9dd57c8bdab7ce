//! The library's enums as command-line values. Clap stays in `cli/`: the library types carry
//! their own spelling (`as_str`), and these impls list the variants and the help each one shows.

#[cfg(feature = "fleet")]
use crate::coverage::CoverageStatus;
use crate::notice::LogFormat;
use crate::report::{Format, ListFormat};
use clap::ValueEnum;
use clap::builder::PossibleValue;

#[cfg(feature = "fleet")]
impl ValueEnum for CoverageStatus {
    fn value_variants<'a>() -> &'a [Self] {
        &Self::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        let help = match self {
            Self::Compatible => {
                "No artifact of its own, but another one's symbol versions fit it (counted as covered)."
            }
            Self::Building => "A run for it is queued or in progress.",
            Self::Failed => "Its latest run failed.",
            Self::TimedOut => "Its run passed the deadline unfinished.",
            _ => return Some(PossibleValue::new(self.as_str())),
        };
        Some(PossibleValue::new(self.as_str()).help(help))
    }
}

impl ValueEnum for Format {
    fn value_variants<'a>() -> &'a [Self] {
        &[
            Self::Table,
            Self::Csv,
            Self::Json,
            Self::Markdown,
            Self::Html,
        ]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            Self::Table => PossibleValue::new("table"),
            Self::Csv => PossibleValue::new("csv"),
            Self::Json => PossibleValue::new("json"),
            Self::Markdown => PossibleValue::new("markdown"),
            Self::Html => PossibleValue::new("html").help(
                "One self-contained file: charts as inline SVG, a sortable table, no external assets.",
            ),
        })
    }
}

impl ValueEnum for ListFormat {
    fn value_variants<'a>() -> &'a [Self] {
        &[Self::Table, Self::Json]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(match self {
            Self::Table => "table",
            Self::Json => "json",
        }))
    }
}

impl ValueEnum for LogFormat {
    fn value_variants<'a>() -> &'a [Self] {
        &[Self::Text, Self::Json]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            Self::Text => PossibleValue::new("text").help("`warning: ...`"),
            Self::Json => PossibleValue::new("json").help(
                "`{\"time\":\"...\",\"level\":\"warn\",\"target\":\"kfleet::...\",\"message\":\"...\", ...fields}`",
            ),
        })
    }
}
