//! `links:`: where a person opens what an answer names. `links.trace_url` is a URL template with
//! `{traceID}` where the trace ID goes (for example a Grafana Explore URL for the Tempo data
//! source), and answers that carry a trace ID add it as `traceUrl`.
//!
//! The template may be written as a browser shows it, JSON and all
//! (`...&panes={"a":{"queries":[{"query":"{traceID}"}]}}`): characters a URL cannot carry
//! raw (`"`, `{`, `}`, spaces, non-ASCII...) are percent-encoded in the links, as a browser
//! would send them, and the result must parse as an http(s) URL with a host. The trace ID is
//! 32 lowercase hex digits, which need no encoding anywhere in a URL.

use std::fmt::Write as _;

use anomaly_core::{ConfigError, TraceId};
use serde::Deserialize;

/// What marks the trace ID's place in `links.trace_url`.
pub const TRACE_ID_PLACEHOLDER: &str = "{traceID}";

/// The `links:` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinksConfig {
    /// A URL template with `{traceID}`, e.g.
    /// `https://grafana.example/explore?...{traceID}...`; empty turns trace links off.
    pub trace_url: String,
}

impl LinksConfig {
    /// Empty, or an http(s) URL template with a host and at least one `{traceID}`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.trace_url.is_empty() {
            return Ok(());
        }
        let invalid = |why: String| ConfigError::new("links.trace_url", why);
        if !self.trace_url.contains(TRACE_ID_PLACEHOLDER) {
            return Err(invalid(format!(
                "must contain {TRACE_ID_PLACEHOLDER} (exactly so, case included) where the trace \
                 ID goes, or be empty to turn trace links off"
            )));
        }
        let example = fill(&self.trace_url, &TraceId::from_bytes(&[0xAB; 16]));
        let problem = match example.parse::<http::Uri>() {
            Err(e) => Some(e.to_string()),
            Ok(uri) if !matches!(uri.scheme_str(), Some("http" | "https")) => {
                Some("not http or https".to_owned())
            }
            Ok(uri) if uri.host().is_none_or(str::is_empty) => Some("no host".to_owned()),
            Ok(_) => None,
        };
        if let Some(problem) = problem {
            return Err(invalid(format!(
                "must be an absolute http:// or https:// URL with a host once \
                 {TRACE_ID_PLACEHOLDER} is filled in, e.g. \
                 https://grafana.example/explore?...{TRACE_ID_PLACEHOLDER}... ({problem})"
            )));
        }
        Ok(())
    }

    /// The link to trace `id`; `None` when `links.trace_url` is empty.
    pub fn trace_url(&self, id: &TraceId) -> Option<String> {
        (!self.trace_url.is_empty()).then(|| fill(&self.trace_url, id))
    }
}

/// The template with every `{traceID}` replaced by `id`, and what a URL cannot carry raw
/// percent-encoded.
fn fill(template: &str, id: &TraceId) -> String {
    let filled = template.replace(TRACE_ID_PLACEHOLDER, id.as_str());
    let mut out = String::with_capacity(filled.len() + 16);
    for c in filled.chars() {
        if allowed(c) {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// RFC 3986's unreserved and reserved characters, and `%` (the template's own escapes stay as
/// written).
fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~:/?#[]@!$&'()*+,;=%".contains(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(template: &str) -> LinksConfig {
        LinksConfig {
            trace_url: template.to_owned(),
        }
    }

    #[test]
    fn empty_is_off() {
        let off = LinksConfig::default();
        assert_eq!(off.validate(), Ok(()));
        let id = TraceId::parse("1").unwrap();
        assert_eq!(off.trace_url(&id), None);
    }

    #[test]
    fn links_fill_every_placeholder_and_encode_what_urls_cannot_carry() {
        let id = TraceId::parse("AF7651916cd43dd8448eb211c80319c").unwrap();
        let hex = "0af7651916cd43dd8448eb211c80319c";
        let cases = [
            (
                "http://tempo:3200/api/traces/{traceID}".to_owned(),
                format!("http://tempo:3200/api/traces/{hex}"),
            ),
            (
                "https://grafana.example/explore?left=%7B%22query%22:%22{traceID}%22%7D".to_owned(),
                format!("https://grafana.example/explore?left=%7B%22query%22:%22{hex}%22%7D"),
            ),
            (
                r#"https://g.example/explore?panes={"a":{"queries":[{"query":"{traceID}"}]}}&orgId=1"#
                    .to_owned(),
                format!(
                    "https://g.example/explore?panes=%7B%22a%22:%7B%22queries%22:[%7B%22query%22:%22{hex}%22%7D]%7D%7D&orgId=1"
                ),
            ),
            (
                "https://x.example/t/{traceID}?again={traceID}&q=a b é".to_owned(),
                format!("https://x.example/t/{hex}?again={hex}&q=a%20b%20%C3%A9"),
            ),
            (
                "http://[::1]:3000/trace/{traceID}#top".to_owned(),
                format!("http://[::1]:3000/trace/{hex}#top"),
            ),
        ];
        for (template, want) in cases {
            let l = links(&template);
            assert_eq!(l.validate(), Ok(()), "{template}");
            let got = l.trace_url(&id).unwrap();
            assert_eq!(got, want);
            got.parse::<http::Uri>().expect("a URL");
        }
    }

    #[derive(Debug, Default, Deserialize)]
    struct NoSection {}

    impl crate::ServiceSection for NoSection {
        const NAME: &'static str = "checker";
        fn validate(&self, _: &crate::CommonConfig) -> Result<(), ConfigError> {
            Ok(())
        }
    }

    #[test]
    // figment's Jail closures return figment::Error, which is large; that is figment's API.
    #[allow(clippy::result_large_err)]
    fn the_section_loads_from_file_and_environment_and_stops_a_bad_template() {
        figment::Jail::expect_with(|jail| {
            let path = jail.directory().join("config.yaml");
            let load = || crate::load::<NoSection>(Some(&path));
            jail.create_file("config.yaml", "links: {}\n")?;
            assert_eq!(load().unwrap().common.links, LinksConfig::default());
            jail.create_file(
                "config.yaml",
                "links: { trace_url: \"https://g.example/t/{traceID}\" }\n",
            )?;
            let loaded = load().unwrap().common.links;
            assert_eq!(loaded.trace_url, "https://g.example/t/{traceID}");
            jail.set_env(
                "ANOMALY_LINKS__TRACE_URL",
                "https://other.example/{traceID}",
            );
            assert_eq!(
                load().unwrap().common.links.trace_url,
                "https://other.example/{traceID}"
            );
            jail.set_env("ANOMALY_LINKS__TRACE_URL", "https://other.example/");
            let err = load().unwrap_err().to_string();
            assert!(err.contains("links.trace_url"), "{err}");
            jail.set_env("ANOMALY_LINKS__TRACE_URL", "");
            jail.create_file("config.yaml", "links: { trace_uri: \"x\" }\n")?;
            let err = load().unwrap_err().to_string();
            assert!(err.contains("trace_uri"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn templates_that_cannot_make_links_are_refused_naming_the_key() {
        let cases = [
            ("https://grafana.example/explore", "must contain {traceID}"),
            (
                "https://grafana.example/{traceId}",
                "must contain {traceID}",
            ),
            ("grafana.example/{traceID}", "absolute http:// or https://"),
            ("/explore?trace={traceID}", "absolute http:// or https://"),
            (
                "ftp://files.example/{traceID}",
                "absolute http:// or https://",
            ),
            ("https:///{traceID}", "absolute http:// or https://"),
            ("https://exa mple/{traceID}", "absolute http:// or https://"),
        ];
        for (template, why) in cases {
            let err = links(template).validate().unwrap_err();
            let text = err.to_string();
            assert!(text.contains("links.trace_url"), "{text}");
            assert!(text.contains(why), "{template}: {text}");
        }
    }
}
