//! Baseline keys: (service, endpoint, hour, dayType) and their unambiguous Redis key body.
//!
//! The body is `service|endpoint|hour|dayType`. Service and endpoint are percent-encoded for
//! `%`, `|`, `{`, `}` and bytes below 0x20, so a body splits back into exactly four fields, never
//! contains a brace (it is always a valid Redis Cluster hash tag) and never a control byte.
//! Everything else, unicode included, is kept verbatim: the `percent-encoding` crate always
//! escapes non-ASCII bytes, which would triple the size of non-Latin names in every key, so this
//! module carries its own five-character escape set.
//!
//! Names are held to one rule, [`NameRules`] (`max_name_bytes`), wherever they become a key:
//! the ingester refuses exactly the names the checker would refuse, so no window is filled for
//! a name that can never be checked.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// Whether a local date counts as a weekday or as a weekend (holidays count as weekend).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DayType {
    Weekday,
    Weekend,
}

impl DayType {
    pub fn as_str(self) -> &'static str {
        match self {
            DayType::Weekday => "weekday",
            DayType::Weekend => "weekend",
        }
    }
}

impl fmt::Display for DayType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DayType {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "weekday" => Ok(DayType::Weekday),
            "weekend" => Ok(DayType::Weekend),
            other => Err(KeyError::DayType(other.to_owned())),
        }
    }
}

/// Which name of a key: the service (Tempo's `rootServiceName`) or the endpoint (the root
/// span's name, `rootTraceName`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NameField {
    Service,
    Endpoint,
}

impl NameField {
    pub fn as_str(self) -> &'static str {
        match self {
            NameField::Service => "service",
            NameField::Endpoint => "endpoint",
        }
    }
}

impl fmt::Display for NameField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a service or endpoint name must be to become part of a key: not empty, and at most
/// `max_bytes` bytes of UTF-8 (the `max_name_bytes` setting, which every service reads).
///
/// The byte length, not the character count, is what a name costs in every Redis key and in
/// every check request, so that is what is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "usize")]
pub struct NameRules {
    max_bytes: usize,
}

impl NameRules {
    /// The configuration key, at the top level of the shared file.
    pub const CONFIG_KEY: &'static str = "max_name_bytes";
    /// The default `max_name_bytes`.
    pub const DEFAULT_MAX_BYTES: usize = 256;
    /// The largest `max_name_bytes` accepted: a name this long is already three times that in
    /// the worst-case percent-encoded key, in each of a key's Redis keys.
    pub const MAX_BYTES_LIMIT: usize = 65_536;

    /// No bound on length, only on emptiness: for bodies read back from Redis, which were
    /// admitted under whatever limit was configured when they were written.
    const UNBOUNDED: NameRules = NameRules {
        max_bytes: usize::MAX,
    };

    /// Names of at most `max_bytes` bytes; `max_bytes` must be from 1 to
    /// [`NameRules::MAX_BYTES_LIMIT`].
    pub fn new(max_bytes: usize) -> Result<Self, ConfigError> {
        if (1..=Self::MAX_BYTES_LIMIT).contains(&max_bytes) {
            Ok(NameRules { max_bytes })
        } else {
            Err(ConfigError::new(
                Self::CONFIG_KEY,
                format!(
                    "must be from 1 to {}, got {max_bytes}",
                    Self::MAX_BYTES_LIMIT
                ),
            ))
        }
    }

    pub fn max_bytes(self) -> usize {
        self.max_bytes
    }

    /// Parses a name from the JSON field `wire` of a request (`rootServiceName`,
    /// `rootTraceName`): present, a string, and passing the rule. The checker and the ingester
    /// both read names through this, so they refuse the same names with the same errors.
    pub fn parse_json<'a>(
        self,
        field: NameField,
        wire: &'static str,
        value: Option<&'a serde_json::Value>,
    ) -> Result<&'a str, KeyError> {
        let name = match value {
            None | Some(serde_json::Value::Null) => return Err(KeyError::Missing { field, wire }),
            Some(serde_json::Value::String(s)) => s.as_str(),
            Some(_) => return Err(KeyError::NotString { field, wire }),
        };
        self.check(field, name)?;
        Ok(name)
    }

    /// Checks one name against the rule.
    pub fn check(self, field: NameField, name: &str) -> Result<(), KeyError> {
        if name.is_empty() {
            return Err(KeyError::Empty { field });
        }
        if name.len() > self.max_bytes {
            return Err(KeyError::TooLong {
                field,
                len: name.len(),
                max: self.max_bytes,
            });
        }
        Ok(())
    }
}

impl Default for NameRules {
    fn default() -> Self {
        NameRules {
            max_bytes: Self::DEFAULT_MAX_BYTES,
        }
    }
}

impl TryFrom<usize> for NameRules {
    type Error = String;

    fn try_from(max_bytes: usize) -> Result<Self, Self::Error> {
        NameRules::new(max_bytes).map_err(|e| e.message)
    }
}

/// Why a key or one of its parts was refused. The variant (and a name's [`NameField`]) says
/// which part; the services map it to their API error code (anomaly-runtime's `ErrorCode`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A name's JSON field is absent or null; `wire` is the field's name in the request.
    #[error("{wire} is missing")]
    Missing {
        field: NameField,
        wire: &'static str,
    },
    #[error("{wire} must be a string")]
    NotString {
        field: NameField,
        wire: &'static str,
    },
    #[error("{field} name must not be empty")]
    Empty { field: NameField },
    #[error(
        "{field} name is {len} bytes long, more than the limit of {max} bytes (max_name_bytes)"
    )]
    TooLong {
        field: NameField,
        len: usize,
        max: usize,
    },
    #[error("hour must be an integer from 0 to 23, got {0:?}")]
    Hour(String),
    #[error("dayType must be \"weekday\" or \"weekend\", got {0:?}")]
    DayType(String),
    #[error("key body must have four '|'-separated fields, got {0}")]
    FieldCount(usize),
    #[error("bad percent escape in key body field {field}")]
    Escape { field: &'static str },
    #[error("key body field {field} is not in canonical form")]
    NotCanonical { field: &'static str },
}

/// The unit a baseline is kept for. Its fields are private and it does not deserialize, so a
/// key is only ever built through [`BaselineKey::new`], [`BaselineKey::with_rules`] or
/// [`BaselineKey::decode`], each of which checks it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BaselineKey {
    service: String,
    endpoint: String,
    hour: u8,
    day_type: DayType,
}

impl BaselineKey {
    /// The service (Tempo's `rootServiceName`).
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The endpoint (the root span's name, Tempo's `rootTraceName`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The local hour, 0-23.
    pub fn hour(&self) -> u8 {
        self.hour
    }

    pub fn day_type(&self) -> DayType {
        self.day_type
    }

    /// Builds a key under the default [`NameRules`] (names of 1 to 256 bytes), checking the
    /// hour. The services build keys with [`BaselineKey::with_rules`] and the configured rule.
    pub fn new(
        service: impl Into<String>,
        endpoint: impl Into<String>,
        hour: u8,
        day_type: DayType,
    ) -> Result<Self, KeyError> {
        Self::with_rules(service, endpoint, hour, day_type, NameRules::default())
    }

    /// Builds a key whose names pass `rules`, checking the hour.
    pub fn with_rules(
        service: impl Into<String>,
        endpoint: impl Into<String>,
        hour: u8,
        day_type: DayType,
        rules: NameRules,
    ) -> Result<Self, KeyError> {
        let key = BaselineKey {
            service: service.into(),
            endpoint: endpoint.into(),
            hour,
            day_type,
        };
        rules.check(NameField::Service, &key.service)?;
        rules.check(NameField::Endpoint, &key.endpoint)?;
        if key.hour > 23 {
            return Err(KeyError::Hour(key.hour.to_string()));
        }
        Ok(key)
    }

    /// The Redis key body `service|endpoint|hour|dayType`.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(self.service.len() + self.endpoint.len() + 12);
        escape_into(&self.service, &mut out);
        out.push('|');
        escape_into(&self.endpoint, &mut out);
        out.push('|');
        out.push_str(itoa_hour(self.hour));
        out.push('|');
        out.push_str(self.day_type.as_str());
        out
    }

    /// `service|endpoint`, escaped as in [`BaselineKey::encode`]: what the keys of one
    /// endpoint's 48 buckets share.
    pub fn endpoint_body(&self) -> String {
        let mut out = String::with_capacity(self.service.len() + self.endpoint.len() + 1);
        escape_into(&self.service, &mut out);
        out.push('|');
        escape_into(&self.endpoint, &mut out);
        out
    }

    /// The same endpoint's key at another hour and day type.
    pub fn at(&self, hour: u8, day_type: DayType) -> BaselineKey {
        BaselineKey {
            service: self.service.clone(),
            endpoint: self.endpoint.clone(),
            hour: hour % 24,
            day_type,
        }
    }

    /// Parses a body written by [`BaselineKey::encode`]. Only the canonical form is accepted,
    /// so every key has exactly one body. Names are not held to a length: a body in Redis was
    /// admitted under the limit configured when it was written, and must still be recomputed,
    /// pruned and expired after `max_name_bytes` is lowered.
    pub fn decode(body: &str) -> Result<Self, KeyError> {
        let fields: Vec<&str> = body.split('|').collect();
        let [service, endpoint, hour, day_type] = fields[..] else {
            return Err(KeyError::FieldCount(fields.len()));
        };
        let service = unescape(service, "service")?;
        let endpoint = unescape(endpoint, "endpoint")?;
        let hour = parse_hour(hour)?;
        let day_type = day_type.parse()?;
        BaselineKey::with_rules(service, endpoint, hour, day_type, NameRules::UNBOUNDED)
    }
}

impl fmt::Display for BaselineKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

/// Parses an hour given as text (a query parameter or a key field): "0" to "23", no sign,
/// no leading zeros beyond a single "0".
pub fn parse_hour(s: &str) -> Result<u8, KeyError> {
    let canonical = !s.is_empty()
        && s.len() <= 2
        && s.bytes().all(|b| b.is_ascii_digit())
        && !(s.len() == 2 && s.starts_with('0'));
    match s.parse::<u8>() {
        Ok(h) if canonical && h <= 23 => Ok(h),
        _ => Err(KeyError::Hour(s.to_owned())),
    }
}

fn itoa_hour(hour: u8) -> &'static str {
    const HOURS: [&str; 24] = [
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
        "17", "18", "19", "20", "21", "22", "23",
    ];
    HOURS.get(usize::from(hour)).copied().unwrap_or("invalid")
}

fn needs_escape(b: u8) -> bool {
    b < 0x20 || matches!(b, b'%' | b'|' | b'{' | b'}')
}

fn escape_into(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for ch in s.chars() {
        // Every byte that needs escaping is ASCII, so it is a whole `char`.
        if ch.is_ascii() && needs_escape(ch as u8) {
            let b = ch as u8;
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        } else {
            out.push(ch);
        }
    }
}

fn unescape(s: &str, field: &'static str) -> Result<String, KeyError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hi = bytes.get(i + 1).and_then(|&c| hex_value(c));
            let lo = bytes.get(i + 2).and_then(|&c| hex_value(c));
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(KeyError::Escape { field });
            };
            let decoded = (hi << 4) | lo;
            if !needs_escape(decoded) {
                return Err(KeyError::NotCanonical { field });
            }
            out.push(decoded);
            i += 3;
        } else if needs_escape(b) {
            return Err(KeyError::NotCanonical { field });
        } else {
            out.push(b);
            i += 1;
        }
    }
    // The input was a `str` and escapes only ever produce ASCII, so this cannot fail; the
    // error arm keeps decode total anyway.
    String::from_utf8(out).map_err(|_| KeyError::Escape { field })
}

/// Canonical escapes use upper-case hex digits only.
fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(service: &str, endpoint: &str) -> BaselineKey {
        BaselineKey::new(service, endpoint, 14, DayType::Weekday).unwrap()
    }

    #[test]
    fn encodes_examples() {
        let cases = [
            ("checkout", "POST /pay", "checkout|POST /pay|14|weekday"),
            ("a|b", "c", "a%7Cb|c|14|weekday"),
            ("{x}", "%", "%7Bx%7D|%25|14|weekday"),
            ("tab\there", "new\nline", "tab%09here|new%0Aline|14|weekday"),
            ("日本", "ünïcode 🎉", "日本|ünïcode 🎉|14|weekday"),
            ("del\u{7f}", "x", "del\u{7f}|x|14|weekday"),
        ];
        for (service, endpoint, body) in cases {
            let k = key(service, endpoint);
            assert_eq!(k.encode(), body, "{service:?} {endpoint:?}");
            assert_eq!(BaselineKey::decode(body).unwrap(), k);
        }
    }

    #[test]
    fn rejects_bad_bodies() {
        let cases = [
            ("a|b|14", KeyError::FieldCount(3)),
            ("a|b|c|14|weekday", KeyError::FieldCount(5)),
            ("a|b|24|weekday", KeyError::Hour("24".into())),
            ("a|b|07|weekday", KeyError::Hour("07".into())),
            ("a|b|-1|weekday", KeyError::Hour("-1".into())),
            ("a|b|+1|weekday", KeyError::Hour("+1".into())),
            ("a|b||weekday", KeyError::Hour(String::new())),
            ("a|b|1|holiday", KeyError::DayType("holiday".into())),
            (
                "|b|1|weekday",
                KeyError::Empty {
                    field: NameField::Service,
                },
            ),
            (
                "a||1|weekday",
                KeyError::Empty {
                    field: NameField::Endpoint,
                },
            ),
            ("a%7|b|1|weekday", KeyError::Escape { field: "service" }),
            ("a%zz|b|1|weekday", KeyError::Escape { field: "service" }),
            ("a|b%7c|1|weekday", KeyError::Escape { field: "endpoint" }),
            (
                "a%41|b|1|weekday",
                KeyError::NotCanonical { field: "service" },
            ),
            (
                "a{|b|1|weekday",
                KeyError::NotCanonical { field: "service" },
            ),
            (
                "a|b\n|1|weekday",
                KeyError::NotCanonical { field: "endpoint" },
            ),
        ];
        for (body, err) in cases {
            assert_eq!(BaselineKey::decode(body), Err(err), "{body:?}");
        }
    }

    #[test]
    fn hours_parse_canonically() {
        for h in 0..24u8 {
            assert_eq!(parse_hour(&h.to_string()), Ok(h));
            assert_eq!(itoa_hour(h), h.to_string());
        }
        for bad in ["", "24", "99", "007", "1.0", " 1", "x", "256"] {
            assert!(parse_hour(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_are_held_to_the_rule_in_bytes() {
        let nine = NameRules::new(9).unwrap();
        let too_long = |len| KeyError::TooLong {
            field: NameField::Endpoint,
            len,
            max: 9,
        };
        // (name, result): the limit counts UTF-8 bytes ("abc日本" is 5 characters, 9 bytes).
        let cases = [
            ("a", Ok(())),
            ("123456789", Ok(())),
            ("abc日本", Ok(())),
            ("1234567890", Err(too_long(10))),
            ("abcd日本", Err(too_long(10))),
            (
                "",
                Err(KeyError::Empty {
                    field: NameField::Endpoint,
                }),
            ),
        ];
        for (name, want) in cases {
            assert_eq!(nine.check(NameField::Endpoint, name), want, "{name:?}");
            let built = BaselineKey::with_rules("svc", name, 3, DayType::Weekday, nine);
            assert_eq!(built.map(|k| k.endpoint), want.map(|()| name.to_owned()));
        }
        let err = BaselineKey::with_rules("0123456789", "e", 3, DayType::Weekday, nine);
        assert_eq!(
            err,
            Err(KeyError::TooLong {
                field: NameField::Service,
                len: 10,
                max: 9
            })
        );
        assert_eq!(
            too_long(10).to_string(),
            "endpoint name is 10 bytes long, more than the limit of 9 bytes (max_name_bytes)"
        );
    }

    #[test]
    fn names_parse_from_json_once_for_every_service() {
        use serde_json::json;
        let rules = NameRules::new(4).unwrap();
        let service = NameField::Service;
        let wire = "rootServiceName";
        let missing = KeyError::Missing {
            field: service,
            wire,
        };
        let not_string = KeyError::NotString {
            field: service,
            wire,
        };
        for (value, want) in [
            (None, Err(missing.clone())),
            (Some(json!(null)), Err(missing)),
            (Some(json!(7)), Err(not_string.clone())),
            (Some(json!(["a"])), Err(not_string)),
            (Some(json!("")), Err(KeyError::Empty { field: service })),
            (
                Some(json!("abcde")),
                Err(KeyError::TooLong {
                    field: service,
                    len: 5,
                    max: 4,
                }),
            ),
            (Some(json!("abcd")), Ok("abcd")),
            (Some(json!("é|{")), Ok("é|{")),
        ] {
            assert_eq!(
                rules.parse_json(service, wire, value.as_ref()),
                want,
                "{value:?}"
            );
        }
        assert_eq!(
            KeyError::Missing {
                field: service,
                wire
            }
            .to_string(),
            "rootServiceName is missing"
        );
    }

    #[test]
    fn new_holds_names_to_the_default_rule() {
        assert_eq!(NameRules::default().max_bytes(), 256);
        let at = "x".repeat(256);
        let over = "x".repeat(257);
        assert!(BaselineKey::new(&at, &at, 0, DayType::Weekend).is_ok());
        assert_eq!(
            BaselineKey::new(&over, "e", 0, DayType::Weekend),
            Err(KeyError::TooLong {
                field: NameField::Service,
                len: 257,
                max: 256
            })
        );
        // A body stored under a higher limit still decodes (and so is recomputed and pruned).
        let wide = NameRules::new(NameRules::MAX_BYTES_LIMIT).unwrap();
        let stored = BaselineKey::with_rules(&over, &over, 0, DayType::Weekend, wide).unwrap();
        assert_eq!(BaselineKey::decode(&stored.encode()), Ok(stored));
    }

    #[test]
    fn the_limit_is_from_1_to_65536() {
        for ok in [1, 256, 65_536] {
            assert_eq!(NameRules::new(ok).map(NameRules::max_bytes), Ok(ok));
        }
        for bad in [0, 65_537, usize::MAX] {
            let err = NameRules::new(bad).unwrap_err();
            assert_eq!(err.key, "max_name_bytes");
            assert!(err.message.contains("from 1 to 65536"), "{err}");
        }
    }

    fn wide() -> NameRules {
        NameRules::new(NameRules::MAX_BYTES_LIMIT).unwrap()
    }

    proptest! {
        #[test]
        fn round_trips_any_names(
            service in "\\PC{1,40}|[|{}% \\x00-\\x1f\\x7f]{1,10}|.{1,20}",
            endpoint in any::<String>().prop_filter("non-empty", |s| !s.is_empty()),
            hour in 0u8..24,
            weekend in any::<bool>(),
        ) {
            let day_type = if weekend { DayType::Weekend } else { DayType::Weekday };
            let k = BaselineKey::with_rules(service, endpoint, hour, day_type, wide()).unwrap();
            let body = k.encode();
            prop_assert_eq!(body.matches('|').count(), 3);
            let has_brace = body.contains(['{', '}']);
            prop_assert!(!has_brace);
            prop_assert!(!body.bytes().any(|b| b < 0x20));
            prop_assert_eq!(BaselineKey::decode(&body).unwrap(), k);
        }

        #[test]
        fn distinct_keys_have_distinct_bodies(
            a in any::<(String, String)>(),
            b in any::<(String, String)>(),
        ) {
            prop_assume!(!a.0.is_empty() && !a.1.is_empty() && !b.0.is_empty() && !b.1.is_empty());
            let ka = BaselineKey::with_rules(a.0, a.1, 3, DayType::Weekend, wide()).unwrap();
            let kb = BaselineKey::with_rules(b.0, b.1, 3, DayType::Weekend, wide()).unwrap();
            prop_assert_eq!(ka == kb, ka.encode() == kb.encode());
        }

        #[test]
        fn decode_never_panics(body in any::<String>()) {
            if let Ok(k) = BaselineKey::decode(&body) {
                prop_assert_eq!(k.encode(), body);
            }
        }
    }
}
