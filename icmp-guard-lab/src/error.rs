//! What can go wrong in the lab: a command that would not start or failed, a file that
//! could not be read, output that did not say what it should.

use std::{fmt, io, process::ExitStatus};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug)]
pub enum Error {
    /// The program could not be started (not installed, most often).
    Spawn { command: String, source: io::Error },
    /// The program ran and exited unsuccessfully.
    Failed {
        command: String,
        status: ExitStatus,
        stderr: String,
    },
    /// A file or system call failed.
    Io { what: String, source: io::Error },
    /// A tool's output did not hold what it should.
    Output { what: String, output: String },
    /// Clean-up steps that failed, each in its own words.
    CleanUp { lab: String, failures: Vec<String> },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Spawn { command, source } if source.kind() == io::ErrorKind::NotFound => {
                write!(
                    f,
                    "`{command}`: the program is not installed (run `cargo xtask setup`)"
                )
            }
            Self::Spawn { command, .. } => write!(f, "`{command}` could not be started"),
            Self::Failed {
                command,
                status,
                stderr,
            } => write!(f, "`{command}` failed ({status}): {}", stderr.trim()),
            Self::Io { what, .. } => write!(f, "{what} failed"),
            Self::Output { what, output } => write!(f, "no {what} in: {}", output.trim()),
            Self::CleanUp { lab, failures } => write!(
                f,
                "cleaning up lab {lab} left something behind: {}",
                failures.join("; ")
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Spawn { source, .. } | Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
