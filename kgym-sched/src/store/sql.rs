//! A WHERE clause built from the filters a query actually has, with its
//! parameters: `(?1 IS NULL OR col = ?1)` forms would keep SQLite from
//! using the index that matches the filter.

use rusqlite::types::Value;

/// Conditions joined with AND, and their parameters in order.
#[derive(Debug, Default)]
pub(crate) struct Filter {
    conditions: Vec<String>,
    args: Vec<Value>,
}

impl Filter {
    /// Adds a condition with one `?` per value in `args`.
    pub fn add(&mut self, condition: impl Into<String>, args: impl IntoIterator<Item = Value>) -> &mut Self {
        self.conditions.push(condition.into());
        self.args.extend(args);
        self
    }

    /// Adds `condition` with one argument when `value` is given.
    pub fn add_opt<T: Into<Value>>(&mut self, condition: &str, value: Option<T>) -> &mut Self {
        if let Some(v) = value {
            self.add(condition, [v.into()]);
        }
        self
    }

    /// `WHERE a AND b ...`, or nothing.
    pub fn clause(&self) -> String {
        if self.conditions.is_empty() { String::new() } else { format!("WHERE {}", self.conditions.join(" AND ")) }
    }

    /// The parameters, then `extra`.
    pub fn args(&self, extra: impl IntoIterator<Item = Value>) -> Vec<Value> {
        self.args.iter().cloned().chain(extra).collect()
    }
}

/// A page's `LIMIT ? OFFSET ?` parameters (an offset only without a
/// cursor: after a cursor the page starts right there).
pub(crate) fn limit_offset(limit: u32, start: u64, has_cursor: bool) -> [Value; 2] {
    let offset = if has_cursor { 0 } else { i64::try_from(start).unwrap_or(i64::MAX) };
    [Value::Integer(i64::from(limit)), Value::Integer(offset)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_given_filters_appear() {
        let mut f = Filter::default();
        assert_eq!(f.clause(), "");
        f.add_opt("status = ?", None::<String>)
            .add_opt("key = ?", Some("k".to_owned()))
            .add("id < ?", [Value::Integer(3)]);
        assert_eq!(f.clause(), "WHERE key = ? AND id < ?");
        assert_eq!(f.args([Value::Integer(9)]).len(), 3);
        assert_eq!(limit_offset(5, u64::MAX, false)[1], Value::Integer(i64::MAX));
        assert_eq!(limit_offset(5, 40, true)[1], Value::Integer(0));
    }
}
