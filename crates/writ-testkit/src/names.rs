//! Unique, collision-free names for topics, consumer groups and databases, so tests can share one broker and one server.

/// Longest prefix kept, so that prefix + suffix stays well under PostgreSQL's 63-byte identifier limit.
const MAX_PREFIX: usize = 40;

fn suffix() -> String {
    let u = uuid::Uuid::new_v4().simple().to_string();
    u[..10].to_owned()
}

/// Lowercases `prefix` and maps every char outside `[a-z0-9]` to `sep`; never starts with a digit.
fn sanitize(prefix: &str, sep: char) -> String {
    let mut s: String = prefix
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                sep
            }
        })
        .take(MAX_PREFIX)
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert_str(0, &format!("t{sep}"));
    }
    s
}

/// `prefix` + `_` + 10 random hex chars, from `[a-z0-9_]` only: valid as a Kafka topic, a group id and an unquoted PostgreSQL identifier.
pub fn unique_name(prefix: &str) -> String {
    format!("{}_{}", sanitize(prefix, '_'), suffix())
}

/// A unique Kafka topic name from `[a-z0-9-]` (append `.commands` etc. as needed).
pub fn unique_topic(prefix: &str) -> String {
    format!("{}-{}", sanitize(prefix, '-'), suffix())
}

/// A unique Kafka consumer group id from `[a-z0-9-]`.
pub fn unique_group(prefix: &str) -> String {
    unique_topic(prefix)
}

/// A unique PostgreSQL database (or schema) name from `[a-z0-9_]`, under 63 bytes.
pub fn unique_db_name(prefix: &str) -> String {
    unique_name(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(s: &str, extra: char) -> bool {
        s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == extra)
    }

    #[test]
    fn names_are_unique_and_keep_the_prefix() {
        let a = unique_name("orders");
        let b = unique_name("orders");
        assert_ne!(a, b);
        assert!(a.starts_with("orders_"), "{a}");
        assert_eq!(a.len(), "orders_".len() + 10);
    }

    #[test]
    fn names_use_safe_characters_only() {
        let n = unique_name("My Topic.v1/Ärger-x");
        assert!(only(&n, '_'), "{n}");
        assert!(n.starts_with("my_topic_v1__rger_x_"), "{n}");
        let t = unique_topic("CRM_Customers.v1");
        assert!(only(&t, '-'), "{t}");
        assert!(t.starts_with("crm-customers-v1-"), "{t}");
        assert!(only(&unique_group("g.1"), '-'));
        assert!(only(&unique_db_name("db-x"), '_'));
    }

    #[test]
    fn names_are_valid_postgres_identifiers() {
        for p in ["", "1abc", "-x", &"long".repeat(40)] {
            let n = unique_db_name(p);
            assert!(n.len() <= 63, "{n}");
            assert!(!n.starts_with(|c: char| c.is_ascii_digit()), "{n}");
            assert!(only(&n, '_'), "{n}");
        }
        assert!(unique_db_name("").starts_with("t__"));
        assert!(unique_topic("9").starts_with("t-9-"));
    }
}
