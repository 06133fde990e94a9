//! One error type for the whole crate. Every variant names the operation and, where it applies,
//! what was expected and what was found, so a message can be acted on without reading the code.

use std::path::PathBuf;

/// Crate-wide result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when using skipgate with bad input.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor had the wrong shape, e.g. `Lstm::forward: input (T, B, input_size) expected (.., .., 32), got (100, 64, 16)`.
    #[error("{op}: {what} expected {expected}, got {actual}")]
    Shape {
        op: &'static str,
        what: String,
        expected: String,
        actual: String,
    },
    /// A configuration value or argument is out of its valid range.
    #[error("{op}: invalid {what}: {msg}")]
    Invalid {
        op: &'static str,
        what: String,
        msg: String,
    },
    /// `backward` was called without a matching train-mode `forward`.
    #[error("{op}: backward called without a train-mode forward before it")]
    NoForwardCache { op: &'static str },
    /// A checkpoint or tensor file does not hold what the model needs.
    #[error("{path}: {msg}")]
    Checkpoint { path: String, msg: String },
    /// A file is not in the format it claims to be (truncated, wrong magic number, bad header).
    #[error("{path}: not a valid {format} file: {msg}")]
    Format {
        path: String,
        format: &'static str,
        msg: String,
    },
    /// Training produced a loss or gradient that is NaN or infinite.
    #[error(
        "training stopped at step {step}: {what} is {value} (the last good checkpoint, if one was written, is kept)"
    )]
    NonFinite {
        step: u64,
        what: &'static str,
        value: f64,
    },
    /// Data is empty or unusable (e.g. an empty text file).
    #[error("{what}: {msg}")]
    Data { what: String, msg: String },
    /// An operating-system error on a named file.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Shorthand for [`Error::Shape`] with shapes formatted as tuples.
    pub fn shape(
        op: &'static str,
        what: impl Into<String>,
        expected: impl Into<String>,
        actual: &[usize],
    ) -> Self {
        Error::Shape {
            op,
            what: what.into(),
            expected: expected.into(),
            actual: fmt_shape(actual),
        }
    }

    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(op: &'static str, what: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Invalid {
            op,
            what: what.into(),
            msg: msg.into(),
        }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Formats a shape as `(2, 3, 4)`.
pub fn fmt_shape(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("({})", dims.join(", "))
}

/// Returns an [`Error::Shape`] unless `actual == expected`.
pub fn check_shape(
    op: &'static str,
    what: &str,
    expected: &[usize],
    actual: &[usize],
) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(Error::shape(op, what, fmt_shape(expected), actual))
    }
}
