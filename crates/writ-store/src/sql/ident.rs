//! SQL identifiers from configuration: validated against a strict pattern and
//! quoted, so nothing but checked names is ever spliced into SQL text.

use std::fmt;

/// A validated SQL identifier (`^[A-Za-z_][A-Za-z0-9_]*$`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ident(String);

impl Ident {
    /// Validates `name`; the error names what is wrong (the name is config, not payload).
    pub fn new(name: &str) -> Result<Self, String> {
        if is_valid(name) {
            Ok(Self(name.to_owned()))
        } else {
            Err(format!(
                "invalid SQL identifier {name:?}: must match ^[A-Za-z_][A-Za-z0-9_]*$"
            ))
        }
    }

    /// The bare name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Ident {
    /// Writes the quoted form (`"name"`); valid names contain no quote to escape.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0)
    }
}

/// Whether `name` matches `^[A-Za-z_][A-Za-z0-9_]*$`.
pub fn is_valid(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A table name, optionally schema-qualified (`schema.table`), each part validated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableName {
    schema: Option<Ident>,
    name: Ident,
}

impl TableName {
    /// Parses `table` or `schema.table`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.split_once('.') {
            Some((schema, name)) => Ok(Self {
                schema: Some(Ident::new(schema)?),
                name: Ident::new(name)?,
            }),
            None => Ok(Self {
                schema: None,
                name: Ident::new(s)?,
            }),
        }
    }

    /// The unqualified table name.
    pub fn name(&self) -> &Ident {
        &self.name
    }
}

impl fmt::Display for TableName {
    /// Writes the quoted, possibly qualified form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(s) => write!(f, "{s}.{}", self.name),
            None => write!(f, "{}", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_validated() {
        for ok in ["a", "_", "customer_id", "T1", "_x9"] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in [
            "", "1a", "a-b", "a b", "a\"b", "a;drop", "é", "a.b", "\"a\"", "a\0",
        ] {
            assert!(!is_valid(bad), "{bad:?}");
        }
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(Ident::new("name").unwrap().to_string(), "\"name\"");
        assert_eq!(
            TableName::parse("crm.customers").unwrap().to_string(),
            "\"crm\".\"customers\""
        );
        assert_eq!(
            TableName::parse("customers").unwrap().to_string(),
            "\"customers\""
        );
        assert!(TableName::parse("a.b.c").is_err());
        assert!(TableName::parse("x; DROP TABLE y").is_err());
    }
}
