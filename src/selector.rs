//! The opt-in label selector for source Secrets (`--secret-label-selector`): parsed from
//! Kubernetes' selector syntax, sent to the apiserver for the Secret watch, and checked on
//! every Secret the operator reads, so a user who may create BasetenSecrets cannot push an
//! arbitrary Secret of the namespace.

use std::collections::BTreeMap;

use kube::core::{Expression, Selector, SelectorExt};

/// A label selector as given, and parsed.
#[derive(Clone, Debug)]
pub struct SecretSelector {
    /// The selector text, as the apiserver takes it.
    pub text: String,
    parsed: Selector,
}

impl SecretSelector {
    /// Parses `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)` and `k notin (a,b)` terms
    /// separated by commas.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut expressions = Vec::new();
        for term in split_terms(text) {
            let term = term.trim();
            if term.is_empty() {
                return Err(format!("empty term in label selector {text:?}"));
            }
            expressions.push(
                parse_term(term)
                    .ok_or_else(|| format!("cannot parse {term:?} in label selector {text:?}"))?,
            );
        }
        Ok(Self {
            text: text.to_string(),
            parsed: expressions.into_iter().collect(),
        })
    }

    /// Whether a Secret with `labels` may be read.
    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        self.parsed.matches(labels.unwrap_or(&BTreeMap::new()))
    }
}

/// Splits at commas outside parentheses.
fn split_terms(text: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (at, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&text[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    terms.push(&text[start..]);
    terms
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

fn parse_term(term: &str) -> Option<Expression> {
    let set = |values: &str| {
        values
            .trim()
            .strip_prefix('(')?
            .strip_suffix(')')
            .map(|inner| inner.split(',').map(|v| v.trim().to_string()).collect())
    };
    if let Some((key, values)) = term.split_once(" notin ") {
        let key = key.trim();
        return valid_key(key).then(|| Some(Expression::NotIn(key.into(), set(values)?)))?;
    }
    if let Some((key, values)) = term.split_once(" in ") {
        let key = key.trim();
        return valid_key(key).then(|| Some(Expression::In(key.into(), set(values)?)))?;
    }
    if let Some((key, value)) = term.split_once("!=") {
        let key = key.trim();
        return valid_key(key).then(|| Expression::NotEqual(key.into(), value.trim().into()));
    }
    if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
        let key = key.trim();
        return valid_key(key).then(|| Expression::Equal(key.into(), value.trim().into()));
    }
    if let Some(key) = term.strip_prefix('!') {
        let key = key.trim();
        return valid_key(key).then(|| Expression::DoesNotExist(key.into()));
    }
    valid_key(term).then(|| Expression::Exists(term.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_and_matches_the_selector_syntax() {
        let push = SecretSelector::parse("baseten.co/push=true").unwrap();
        assert!(push.matches(Some(&labels(&[("baseten.co/push", "true")]))));
        assert!(!push.matches(Some(&labels(&[("baseten.co/push", "false")]))));
        assert!(!push.matches(None));

        let rich = SecretSelector::parse("team in (ml, infra),tier!=dev,owned,!legacy").unwrap();
        assert!(rich.matches(Some(&labels(&[("team", "ml"), ("owned", "")]))));
        assert!(!rich.matches(Some(&labels(&[("team", "web"), ("owned", "")]))));
        assert!(!rich.matches(Some(&labels(&[
            ("team", "ml"),
            ("owned", ""),
            ("tier", "dev")
        ]))));
        assert!(!rich.matches(Some(&labels(&[
            ("team", "ml"),
            ("owned", ""),
            ("legacy", "1")
        ]))));
        let not_in = SecretSelector::parse("env notin (dev)").unwrap();
        assert!(not_in.matches(None));

        for bad in ["", "a,,b", "a in b", "=x", "spaced key=1"] {
            assert!(SecretSelector::parse(bad).is_err(), "{bad:?}");
        }
    }
}
