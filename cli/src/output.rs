//! What every subcommand prints on stdout.

/// `value` as pretty-printed JSON, on a line of its own.
pub fn print_json<T: serde::Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON values serialise")
    );
}
