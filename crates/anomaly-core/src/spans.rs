//! `spans:`: which spans keep baselines of their own, and the name each is kept under.
//!
//! A span baseline is keyed like a root one, (service, span name, hour, dayType), in a key space
//! of its own (the store's `span:` prefix), so a root and a span with the same names never mix.
//! Span names explode where roots do not (SQL statements, URLs with IDs), so a span's name goes
//! through these steps before it becomes a key, each counted by the ingester:
//!
//! 1. its kind must be one of `kinds` (default SERVER and CLIENT);
//! 2. with `use_http_route` (default on), a span with an `http.route` attribute is named
//!    `METHOD route` (or `route` without a method attribute), as OpenTelemetry's HTTP
//!    conventions name server spans, whatever its own name says;
//! 3. the `normalize` rewrites apply in order, each to the whole name (regular expression
//!    `pattern`, every match replaced by `replacement`, which may use `$1`); the defaults turn
//!    UUIDs into `{uuid}`, and path segments of digits or of 16+ hex digits into `{id}` and
//!    `{hex}`;
//! 4. `ignore` rules (regular expressions on the whole service and span names, as
//!    `ingester.ignore` is for roots) drop it;
//! 5. a service has at most `max_keys_per_service` span keys (enforced by the store).
//!
//! The checker names spans through the same steps, so a span check with a raw name such as
//! `GET /users/123` finds the baseline `GET /users/{id}`.

use std::borrow::Cow;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// The OTLP span kinds (`Span.kind`), named as in configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpanKind {
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

impl SpanKind {
    /// The kind of OTLP's enum value; values this version does not know are `Unspecified`, as
    /// the specification asks of receivers.
    pub fn from_otlp(value: i32) -> SpanKind {
        match value {
            1 => SpanKind::Internal,
            2 => SpanKind::Server,
            3 => SpanKind::Client,
            4 => SpanKind::Producer,
            5 => SpanKind::Consumer,
            _ => SpanKind::Unspecified,
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// One `spans.normalize` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    /// A regular expression; every match in the name is replaced.
    pub pattern: String,
    /// The replacement; `$1`, `${name}` refer to groups, `$$` is a dollar sign.
    pub replacement: String,
}

/// One `spans.ignore` entry: regular expressions on the whole service and span names (both
/// must match when both are given).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpanIgnore {
    pub service: Option<String>,
    pub span: Option<String>,
}

/// The `spans:` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpanConfig {
    /// Whether the ingester keeps span baselines (from OTLP, and from Tempo with
    /// `ingester.tempo.fetch_spans`).
    pub enabled: bool,
    /// The span kinds that get baselines.
    pub kinds: Vec<SpanKind>,
    /// Most span keys (span name, hour, dayType) per service; spans for new keys beyond it are
    /// counted, not stored. 0 means no cap.
    pub max_keys_per_service: u64,
    /// Name spans with an `http.route` attribute `METHOD route`.
    pub use_http_route: bool,
    pub normalize: Vec<Rewrite>,
    pub ignore: Vec<SpanIgnore>,
}

impl Default for SpanConfig {
    fn default() -> Self {
        let rewrite = |pattern: &str, replacement: &str| Rewrite {
            pattern: pattern.to_owned(),
            replacement: replacement.to_owned(),
        };
        SpanConfig {
            enabled: true,
            kinds: vec![SpanKind::Server, SpanKind::Client],
            max_keys_per_service: 2000,
            use_http_route: true,
            normalize: vec![
                rewrite(
                    "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
                    "{uuid}",
                ),
                rewrite(r"/[0-9]+\b", "/{id}"),
                rewrite(r"/[0-9a-fA-F]{16,}\b", "/{hex}"),
            ],
            ignore: Vec::new(),
        }
    }
}

/// Regular expressions matched against whole names: one pair per rule, an absent side matching
/// everything. The ingester's root `ignore` rules and `spans.ignore` are both this.
#[derive(Debug, Clone, Default)]
pub struct IgnoreRules(Vec<(Option<Regex>, Option<Regex>)>);

impl IgnoreRules {
    /// Compiles `(first, second)` pattern pairs; `key(i, side)` names a rule's setting for an
    /// error (`side` 0 is the first name, 1 the second).
    pub fn new<'a>(
        rules: impl IntoIterator<Item = (Option<&'a str>, Option<&'a str>)>,
        key: impl Fn(usize, usize) -> String,
    ) -> Result<Self, ConfigError> {
        let mut compiled = Vec::new();
        for (i, (first, second)) in rules.into_iter().enumerate() {
            if first.is_none() && second.is_none() {
                return Err(ConfigError::new(
                    key(i, 2),
                    "needs one of its two patterns, or both",
                ));
            }
            let anchored = |side: usize, pattern: Option<&str>| {
                pattern
                    .map(|p| {
                        Regex::new(&format!("^(?:{p})$")).map_err(|e| {
                            ConfigError::new(
                                key(i, side),
                                format!("is not a valid regular expression: {e}"),
                            )
                        })
                    })
                    .transpose()
            };
            compiled.push((anchored(0, first)?, anchored(1, second)?));
        }
        Ok(IgnoreRules(compiled))
    }

    /// Whether a rule matches both names.
    pub fn matches(&self, first: &str, second: &str) -> bool {
        self.0.iter().any(|(a, b)| {
            a.as_ref().is_none_or(|a| a.is_match(first))
                && b.as_ref().is_none_or(|b| b.is_match(second))
        })
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Which step produced a span's name, for the ingester's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renamed {
    /// The span's own name, unchanged.
    No,
    /// Named from `http.route` (and perhaps rewritten after).
    HttpRoute,
    /// Changed by a `normalize` rewrite (the first one that changed it).
    Rewrite(usize),
}

/// A span's name as its key holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanName<'a> {
    pub name: Cow<'a, str>,
    pub renamed: Renamed,
}

/// The compiled `spans:` section; cheap to clone.
#[derive(Debug, Clone)]
pub struct SpanRules {
    enabled: bool,
    kinds: u8,
    max_keys_per_service: u64,
    use_http_route: bool,
    rewrites: std::sync::Arc<[(Regex, String)]>,
    ignore: std::sync::Arc<IgnoreRules>,
}

impl Default for SpanRules {
    fn default() -> Self {
        SpanRules::new(&SpanConfig::default()).expect("the default spans section compiles")
    }
}

impl SpanRules {
    /// Validates and compiles the section; an error names the key (`spans.normalize[1].pattern`).
    pub fn new(config: &SpanConfig) -> Result<Self, ConfigError> {
        let rewrites = config
            .normalize
            .iter()
            .enumerate()
            .map(|(i, r)| {
                Regex::new(&r.pattern)
                    .map(|re| (re, r.replacement.clone()))
                    .map_err(|e| {
                        ConfigError::new(
                            format!("spans.normalize[{i}].pattern"),
                            format!("is not a valid regular expression: {e}"),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ignore = IgnoreRules::new(
            config
                .ignore
                .iter()
                .map(|r| (r.service.as_deref(), r.span.as_deref())),
            |i, side| match side {
                0 => format!("spans.ignore[{i}].service"),
                1 => format!("spans.ignore[{i}].span"),
                _ => format!("spans.ignore[{i}]"),
            },
        )?;
        Ok(SpanRules {
            enabled: config.enabled,
            kinds: config.kinds.iter().fold(0, |bits, k| bits | k.bit()),
            max_keys_per_service: config.max_keys_per_service,
            use_http_route: config.use_http_route,
            rewrites: rewrites.into(),
            ignore: std::sync::Arc::new(ignore),
        })
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn max_keys_per_service(&self) -> u64 {
        self.max_keys_per_service
    }

    /// Whether spans of `kind` get baselines.
    pub fn keeps(&self, kind: SpanKind) -> bool {
        self.kinds & kind.bit() != 0
    }

    /// The name a span is kept under: from `http.route` (with `http.request.method`, or the
    /// older `http.method`) when configured and present, then rewritten.
    pub fn name<'a>(
        &self,
        name: &'a str,
        http_route: Option<&str>,
        http_method: Option<&str>,
    ) -> SpanName<'a> {
        let (mut name, mut renamed): (Cow<'a, str>, Renamed) =
            match http_route.filter(|r| self.use_http_route && !r.is_empty()) {
                Some(route) => {
                    let named = match http_method.filter(|m| !m.is_empty()) {
                        Some(method) => format!("{method} {route}"),
                        None => route.to_owned(),
                    };
                    if named == name {
                        (Cow::Borrowed(name), Renamed::No)
                    } else {
                        (Cow::Owned(named), Renamed::HttpRoute)
                    }
                }
                None => (Cow::Borrowed(name), Renamed::No),
            };
        for (i, (pattern, replacement)) in self.rewrites.iter().enumerate() {
            if let Cow::Owned(rewritten) = pattern.replace_all(&name, replacement.as_str()) {
                if rewritten != *name && renamed == Renamed::No {
                    renamed = Renamed::Rewrite(i);
                }
                name = Cow::Owned(rewritten);
            }
        }
        SpanName { name, renamed }
    }

    /// Whether `spans.ignore` drops spans of this service and (final) name.
    pub fn ignored(&self, service: &str, name: &str) -> bool {
        self.ignore.matches(service, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(config: SpanConfig) -> SpanRules {
        SpanRules::new(&config).unwrap()
    }

    #[test]
    fn default_rewrites_turn_ids_into_placeholders() {
        let r = SpanRules::default();
        let cases = [
            ("GET /users/123", "GET /users/{id}"),
            ("GET /users/123/orders/9", "GET /users/{id}/orders/{id}"),
            ("GET /v1/users", "GET /v1/users"),
            ("GET /users/123abc", "GET /users/123abc"),
            (
                "GET /files/6f1c2a7e-0b7d-4b43-9a4e-2f1d0c5b8e11",
                "GET /files/{uuid}",
            ),
            (
                "GET /objects/507f1f77bcf86cd799439011",
                "GET /objects/{hex}",
            ),
            ("SELECT orders", "SELECT orders"),
        ];
        for (raw, want) in cases {
            assert_eq!(r.name(raw, None, None).name, want, "{raw}");
        }
        assert_eq!(
            r.name("GET /users/123", None, None).renamed,
            Renamed::Rewrite(1)
        );
        assert!(matches!(
            r.name("SELECT orders", None, None).name,
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn http_route_names_the_span_and_can_be_turned_off() {
        let r = SpanRules::default();
        let named = r.name("GET", Some("/users/:id"), Some("GET"));
        assert_eq!(named.name, "GET /users/:id");
        assert_eq!(named.renamed, Renamed::HttpRoute);
        assert_eq!(r.name("HTTP GET", Some("/a"), None).name, "/a");
        // Already named so: unchanged.
        assert_eq!(
            r.name("GET /a", Some("/a"), Some("GET")).renamed,
            Renamed::No
        );
        // An empty route is no route.
        assert_eq!(
            r.name("GET /x/1", Some(""), Some("GET")).name,
            "GET /x/{id}"
        );
        let off = rules(SpanConfig {
            use_http_route: false,
            ..SpanConfig::default()
        });
        assert_eq!(off.name("GET", Some("/users/:id"), Some("GET")).name, "GET");
    }

    #[test]
    fn rewrites_apply_in_order_with_groups() {
        let r = rules(SpanConfig {
            normalize: vec![
                Rewrite {
                    pattern: r"^(SELECT|UPDATE) .* FROM (\w+).*$".into(),
                    replacement: "$1 $2".into(),
                },
                Rewrite {
                    pattern: "UPDATE".into(),
                    replacement: "WRITE".into(),
                },
            ],
            ..SpanConfig::default()
        });
        assert_eq!(
            r.name("SELECT a, b FROM orders WHERE id = 7", None, None)
                .name,
            "SELECT orders"
        );
        let named = r.name("UPDATE x FROM t", None, None);
        assert_eq!(named.name, "WRITE t");
        assert_eq!(named.renamed, Renamed::Rewrite(0));
        assert_eq!(r.name("other", None, None).renamed, Renamed::No);
    }

    #[test]
    fn kinds_and_ignore_rules() {
        let r = rules(SpanConfig {
            ignore: vec![
                SpanIgnore {
                    service: None,
                    span: Some("GET /healthz".into()),
                },
                SpanIgnore {
                    service: Some("noisy-.*".into()),
                    span: Some("redis .*".into()),
                },
            ],
            ..SpanConfig::default()
        });
        assert!(r.keeps(SpanKind::Server) && r.keeps(SpanKind::Client));
        assert!(!r.keeps(SpanKind::Internal) && !r.keeps(SpanKind::Unspecified));
        assert_eq!(SpanKind::from_otlp(2), SpanKind::Server);
        assert_eq!(SpanKind::from_otlp(99), SpanKind::Unspecified);
        assert!(r.ignored("any", "GET /healthz"));
        assert!(!r.ignored("any", "GET /healthz/deep"), "whole names only");
        assert!(r.ignored("noisy-cache", "redis GET"));
        assert!(!r.ignored("quiet", "redis GET"));
    }

    #[test]
    fn bad_patterns_name_their_key() {
        let e = SpanRules::new(&SpanConfig {
            normalize: vec![Rewrite {
                pattern: "(".into(),
                replacement: String::new(),
            }],
            ..SpanConfig::default()
        })
        .unwrap_err();
        assert_eq!(e.key, "spans.normalize[0].pattern");
        let e = SpanRules::new(&SpanConfig {
            ignore: vec![SpanIgnore::default(), SpanIgnore::default()],
            ..SpanConfig::default()
        })
        .unwrap_err();
        assert_eq!(e.key, "spans.ignore[0]");
        let e = SpanRules::new(&SpanConfig {
            ignore: vec![SpanIgnore {
                service: None,
                span: Some("[".into()),
            }],
            ..SpanConfig::default()
        })
        .unwrap_err();
        assert_eq!(e.key, "spans.ignore[0].span");
    }
}
