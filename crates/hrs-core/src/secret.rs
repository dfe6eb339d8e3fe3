//! Where a password comes from: never a configuration file or the command line themselves,
//! which more people read than the secret should reach. One source for every password HRS
//! uses (the SQL Server login's, the proxy's).

use std::fmt;
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use secrecy::zeroize::Zeroizing;

/// Where a password is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// An environment variable of this name, e.g. `HRS_PROXY_PASSWORD`.
    Env(String),
    /// A file holding the password on one line (a final line break is ignored).
    File(PathBuf),
}

/// Why a password could not be read; never carries the password.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The environment variable is not set.
    #[error("the password's environment variable {name} is not set")]
    Env {
        /// Its name.
        name: String,
    },
    /// The file could not be read.
    #[error("cannot read the password file {}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file holds more than one line.
    #[error("the password file {} holds more than one line", path.display())]
    Lines {
        /// The file.
        path: PathBuf,
    },
    /// The password is empty.
    #[error("the password from the {from} is empty")]
    Empty {
        /// Where it came from.
        from: PasswordSource,
    },
}

impl fmt::Display for PasswordSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(name) => write!(f, "environment variable {name}"),
            Self::File(path) => write!(f, "file {}", path.display()),
        }
    }
}

impl PasswordSource {
    /// The source named by an environment-variable option and a file option, the variable
    /// first; neither means none.
    pub fn from_options(env: Option<&str>, file: Option<&Path>) -> Option<Self> {
        match (env, file) {
            (Some(name), _) => Some(Self::Env(name.to_owned())),
            (None, Some(file)) => Some(Self::File(file.to_owned())),
            (None, None) => None,
        }
    }

    /// Reads the password from the process's environment or the file.
    pub fn read(&self) -> Result<SecretString, PasswordError> {
        self.read_with(|name| std::env::var(name).ok())
    }

    /// Reads the password, taking environment variables from `env` (so tests need not
    /// change the process's environment).
    pub fn read_with(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<SecretString, PasswordError> {
        let password = match self {
            Self::Env(name) => {
                Zeroizing::new(env(name).ok_or_else(|| PasswordError::Env { name: name.clone() })?)
            }
            Self::File(path) => read_file(path)?,
        };
        if password.is_empty() {
            return Err(PasswordError::Empty { from: self.clone() });
        }
        Ok(SecretString::from(password.as_str()))
    }
}

fn read_file(path: &Path) -> Result<Zeroizing<String>, PasswordError> {
    let text =
        Zeroizing::new(
            std::fs::read_to_string(path).map_err(|source| PasswordError::File {
                path: path.to_owned(),
                source,
            })?,
        );
    let line = text.strip_suffix('\n').unwrap_or(&text);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.contains(['\n', '\r']) {
        return Err(PasswordError::Lines {
            path: path.to_owned(),
        });
    }
    Ok(Zeroizing::new(line.to_owned()))
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret as _;

    use super::*;

    #[test]
    fn a_password_file_gives_its_one_line_and_refuses_two() {
        let dir = tempfile::tempdir().expect("temp dir");
        let one = dir.path().join("one");
        std::fs::write(&one, "S3cret!\r\n").expect("write");
        let read = PasswordSource::File(one).read().expect("one line");
        assert_eq!(read.expose_secret(), "S3cret!");
        let two = dir.path().join("two");
        std::fs::write(&two, "a\nb\n").expect("write");
        let err = PasswordSource::File(two).read().expect_err("two lines");
        assert!(err.to_string().contains("more than one line"), "{err}");
    }

    #[test]
    fn an_unset_or_empty_variable_is_named_without_a_value() {
        let unset = PasswordSource::Env("HRS_X".into()).read_with(|_| None);
        assert!(matches!(unset, Err(PasswordError::Env { name }) if name == "HRS_X"));
        let empty = PasswordSource::Env("HRS_X".into()).read_with(|_| Some(String::new()));
        assert!(matches!(empty, Err(PasswordError::Empty { .. })));
    }
}
