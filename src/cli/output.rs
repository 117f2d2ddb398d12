//! How commands print what a machine may read: the `-o json|yaml` choice and its printer.

use clap::ValueEnum;

/// How a command prints data that a machine may read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    // Text for people, a table where there are rows: `-o table` says the same.
    #[default]
    #[value(alias = "table")]
    Text,
    Json,
    Yaml,
}

/// Prints a serializable result as JSON or YAML; `Text` is each command's own business.
pub(super) fn print_structured<T: serde::Serialize>(
    format: OutputFormat,
    value: &T,
) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(value)?),
        OutputFormat::Yaml => print!("{}", serde_yaml_ng::to_string(value)?),
        OutputFormat::Text => unreachable!("callers print text themselves"),
    }
    Ok(())
}
