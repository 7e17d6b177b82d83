//! `overrides:`: per-service and per-endpoint tuning of the rule.
//!
//! Each entry matches service and endpoint names with shell globs (`*`, `?`, `[...]`, `{a,b}`)
//! on the whole name (an absent pattern matches everything) and sets any of `factor`, `k`,
//! `min_samples` and `min_threshold_ms`. The first entry that matches a key is the one that
//! applies; the answer names it. Every service reads the same list.

use globset::{Glob, GlobMatcher};
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// One entry of `overrides:` as configured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    /// Glob on the service name; absent matches every service.
    pub service: Option<String>,
    /// Glob on the endpoint name; absent matches every endpoint.
    pub endpoint: Option<String>,
    pub factor: Option<f64>,
    pub k: Option<f64>,
    pub min_samples: Option<u32>,
    pub min_threshold_ms: Option<f64>,
}

/// The compiled list; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    entries: std::sync::Arc<Vec<Compiled>>,
}

#[derive(Debug)]
struct Compiled {
    over: Override,
    service: Option<GlobMatcher>,
    endpoint: Option<GlobMatcher>,
}

impl Compiled {
    /// Both patterns match (an absent one matches everything).
    fn matches(&self, service: &str, endpoint: &str) -> bool {
        self.service.as_ref().is_none_or(|g| g.is_match(service))
            && self.endpoint.as_ref().is_none_or(|g| g.is_match(endpoint))
    }
}

/// The override that applies to a key: its position in the list and the entry.
#[derive(Debug, Clone, Copy)]
pub struct Applied<'a> {
    pub index: usize,
    pub over: &'a Override,
}

impl Overrides {
    /// Validates and compiles `list`; an error names the offending key (`overrides[i].field`).
    pub fn new(list: &[Override], window_size: u32) -> Result<Self, ConfigError> {
        let mut entries = Vec::with_capacity(list.len());
        for (i, over) in list.iter().enumerate() {
            let key = |field: &str| format!("overrides[{i}].{field}");
            let glob = |field: &str, pattern: &Option<String>| {
                pattern
                    .as_deref()
                    .map(|p| {
                        Glob::new(p).map(|g| g.compile_matcher()).map_err(|e| {
                            ConfigError::new(key(field), format!("is not a valid glob: {e}"))
                        })
                    })
                    .transpose()
            };
            if over.service.is_none() && over.endpoint.is_none() {
                return Err(ConfigError::new(
                    format!("overrides[{i}]"),
                    "needs `service`, `endpoint` or both",
                ));
            }
            let service = glob("service", &over.service)?;
            let endpoint = glob("endpoint", &over.endpoint)?;
            if over.factor.is_some_and(|f| !(f.is_finite() && f > 0.0)) {
                return Err(ConfigError::new(key("factor"), "must be a positive number"));
            }
            if over.k.is_some_and(|k| !(k.is_finite() && k >= 0.0)) {
                return Err(ConfigError::new(key("k"), "must be a number >= 0"));
            }
            if over.min_samples.is_some_and(|m| m == 0 || m > window_size) {
                return Err(ConfigError::new(
                    key("min_samples"),
                    format!("must be from 1 to stats.window_size ({window_size})"),
                ));
            }
            if over
                .min_threshold_ms
                .is_some_and(|m| !(m.is_finite() && m >= 0.0))
            {
                return Err(ConfigError::new(
                    key("min_threshold_ms"),
                    "must be a number >= 0",
                ));
            }
            entries.push(Compiled {
                over: over.clone(),
                service,
                endpoint,
            });
        }
        Ok(Overrides {
            entries: std::sync::Arc::new(entries),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The first entry matching `service` and `endpoint`, if any.
    pub fn find(&self, service: &str, endpoint: &str) -> Option<Applied<'_>> {
        self.entries.iter().enumerate().find_map(|(index, c)| {
            c.matches(service, endpoint).then_some(Applied {
                index,
                over: &c.over,
            })
        })
    }

    /// Whether entry `index` matches this pair (to report entries that match nothing).
    pub fn matches(&self, index: usize, service: &str, endpoint: &str) -> bool {
        self.entries
            .get(index)
            .is_some_and(|c| c.matches(service, endpoint))
    }

    /// The entries as configured.
    pub fn entries(&self) -> impl Iterator<Item = &Override> {
        self.entries.iter().map(|c| &c.over)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(service: Option<&str>, endpoint: Option<&str>, factor: f64) -> Override {
        Override {
            service: service.map(str::to_owned),
            endpoint: endpoint.map(str::to_owned),
            factor: Some(factor),
            ..Override::default()
        }
    }

    #[test]
    fn the_first_match_wins_on_whole_names() {
        let list = Overrides::new(
            &[
                entry(Some("checkout"), Some("POST /pay*"), 3.0),
                entry(Some("check*"), None, 4.0),
                entry(None, Some("GET /{healthz,readyz}"), 5.0),
            ],
            1000,
        )
        .unwrap();
        let factor = |s: &str, e: &str| list.find(s, e).map(|a| (a.index, a.over.factor));
        assert_eq!(factor("checkout", "POST /pay/v2"), Some((0, Some(3.0))));
        assert_eq!(factor("checkout", "GET /cart"), Some((1, Some(4.0))));
        assert_eq!(factor("checkouts", "POST /pay"), Some((1, Some(4.0))));
        assert_eq!(factor("cart", "GET /healthz"), Some((2, Some(5.0))));
        assert_eq!(factor("cart", "GET /readyz"), Some((2, Some(5.0))));
        assert_eq!(factor("cart", "GET /health"), None);
        // Whole names: a pattern is not a substring search; `*` also crosses `/`.
        assert_eq!(factor("xcheckout", "GET /healthzz"), None);
        assert_eq!(factor("checkout", "POST /pay/a/b"), Some((0, Some(3.0))));
    }

    #[test]
    fn bad_entries_name_their_key() {
        let cases = [
            (entry(Some("a["), None, 1.0), "overrides[0].service"),
            (entry(None, Some("{x"), 1.0), "overrides[0].endpoint"),
            (entry(Some("a"), None, -1.0), "overrides[0].factor"),
            (entry(None, None, 1.0), "overrides[0]"),
            (
                Override {
                    min_samples: Some(0),
                    ..entry(Some("a"), None, 1.0)
                },
                "overrides[0].min_samples",
            ),
            (
                Override {
                    min_threshold_ms: Some(-1.0),
                    ..entry(Some("a"), None, 1.0)
                },
                "overrides[0].min_threshold_ms",
            ),
        ];
        for (over, key) in cases {
            assert_eq!(Overrides::new(&[over], 1000).unwrap_err().key, key);
        }
    }
}
