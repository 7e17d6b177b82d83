//! Optional bearer-token authentication for the APIs (probes and metrics stay open).
//!
//! Tokens come from config (`<service>.auth.tokens`, best set through the environment) and/or a
//! file with one token per line (a mounted Kubernetes Secret). Comparison is constant-time, and
//! tokens are secrets: never logged, never in Debug output.

use std::path::PathBuf;
use std::sync::Arc;

use anomaly_core::ConfigError;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::error::{ApiError, ErrorCode};

/// `<service>.auth`: off unless a token is configured.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub tokens: Vec<SecretString>,
    /// A file of tokens, one per line; blank lines and `#` comments are ignored.
    pub tokens_file: Option<PathBuf>,
}

/// The accepted tokens; empty means authentication is off.
#[derive(Clone, Default)]
pub struct Tokens(Arc<Vec<SecretString>>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} configured)", self.0.len())
    }
}

impl Tokens {
    /// Reads the configured tokens (and the tokens file); `section` names the key in errors.
    pub fn load(config: &AuthConfig, section: &str) -> Result<Tokens, ConfigError> {
        let mut tokens: Vec<SecretString> = config.tokens.clone();
        if let Some(path) = &config.tokens_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new(
                    format!("{section}.auth.tokens_file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            tokens.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(|l| SecretString::from(l.to_owned())),
            );
        }
        if tokens.iter().any(|t| t.expose_secret().trim().is_empty()) {
            return Err(ConfigError::new(
                format!("{section}.auth.tokens"),
                "must not contain empty tokens",
            ));
        }
        Ok(Tokens(Arc::new(tokens)))
    }

    pub fn enabled(&self) -> bool {
        !self.0.is_empty()
    }

    /// Whether `candidate` is one of the tokens, in time independent of where they differ.
    pub fn accepts(&self, candidate: &str) -> bool {
        let candidate = candidate.as_bytes();
        // Every token is compared, so timing does not reveal which one matched.
        self.0
            .iter()
            .fold(subtle::Choice::from(0), |found, t| {
                found | t.expose_secret().as_bytes().ct_eq(candidate)
            })
            .into()
    }
}

impl Tokens {
    /// Checks an `Authorization` value (an HTTP header or gRPC metadata): `Ok` when
    /// authentication is off or it is `Bearer <token>` with an accepted token, else why not.
    pub fn check_bearer(&self, authorization: Option<&[u8]>) -> Result<(), &'static str> {
        if !self.enabled() {
            return Ok(());
        }
        let presented = authorization
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match presented {
            Some(token) if self.accepts(token) => Ok(()),
            Some(_) => Err("the bearer token is not valid"),
            None => Err("this API needs an Authorization: Bearer token"),
        }
    }
}

/// Middleware: 401 unless the request carries `Authorization: Bearer <token>`.
pub async fn require_bearer(
    State(tokens): State<Tokens>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    match tokens.check_bearer(presented) {
        Ok(()) => next.run(request).await,
        Err(why) => ApiError::new(ErrorCode::Unauthorized, why).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn loads_and_compares() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "# tokens\nfrom-file\n\n").unwrap();
        let config = AuthConfig {
            tokens: vec![SecretString::from("inline")],
            tokens_file: Some(file.path().to_owned()),
        };
        let tokens = Tokens::load(&config, "checker").unwrap();
        assert!(tokens.enabled());
        assert!(tokens.accepts("inline") && tokens.accepts("from-file"));
        assert!(!tokens.accepts("inlin") && !tokens.accepts("") && !tokens.accepts("# tokens"));
        assert_eq!(format!("{tokens:?}"), "Tokens(2 configured)");
        assert!(!Tokens::default().enabled());
    }

    #[test]
    fn missing_file_names_the_key() {
        let config = AuthConfig {
            tokens: vec![],
            tokens_file: Some("/nonexistent/tokens".into()),
        };
        assert_eq!(
            Tokens::load(&config, "ingester").unwrap_err().key,
            "ingester.auth.tokens_file"
        );
    }
}
