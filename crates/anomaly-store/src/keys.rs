//! Key strings. Nothing outside this crate builds one.

use anomaly_core::{BaselineKey, TraceId};

/// Builds every Redis key behind one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `dur:{B}` for an encoded body.
    pub(crate) fn dur(&self, body: &str) -> String {
        format!("{}dur:{{{body}}}", self.prefix)
    }

    /// `base:{B}` for an encoded body.
    pub(crate) fn base(&self, body: &str) -> String {
        format!("{}base:{{{body}}}", self.prefix)
    }

    pub(crate) fn dirty(&self) -> String {
        format!("{}dirtyKeys", self.prefix)
    }

    pub(crate) fn key_index(&self) -> String {
        format!("{}keyIndex", self.prefix)
    }

    pub(crate) fn seen(&self, trace: &TraceId) -> String {
        format!("{}seen:{{{trace}}}", self.prefix)
    }

    /// The window key of a baseline key; public for tests and tools that inspect Redis.
    pub fn window_key(&self, key: &BaselineKey) -> String {
        self.dur(&key.encode())
    }

    /// The baseline hash key of a baseline key; public for tests and tools.
    pub fn baseline_key(&self, key: &BaselineKey) -> String {
        self.base(&key.encode())
    }

    pub fn dirty_set(&self) -> String {
        self.dirty()
    }

    pub fn seen_key(&self, trace: &TraceId) -> String {
        self.seen(trace)
    }

    /// A key of this deployment with a free-form suffix, for the poller's cursor and lease and
    /// the recomputer's bookkeeping (see those modules).
    pub(crate) fn named(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anomaly_core::DayType;

    #[test]
    fn layout_matches_the_contract() {
        let keys = Keys::new("prod:");
        let k = BaselineKey::new("checkout", "POST /pay", 14, DayType::Weekday).unwrap();
        assert_eq!(
            keys.window_key(&k),
            "prod:dur:{checkout|POST /pay|14|weekday}"
        );
        assert_eq!(
            keys.baseline_key(&k),
            "prod:base:{checkout|POST /pay|14|weekday}"
        );
        assert_eq!(keys.dirty_set(), "prod:dirtyKeys");
        let t = TraceId::parse("AF7651916cd43dd8448eb211c80319c").unwrap();
        assert_eq!(
            keys.seen_key(&t),
            "prod:seen:{0af7651916cd43dd8448eb211c80319c}"
        );
    }
}
