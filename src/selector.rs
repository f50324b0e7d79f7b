//! The opt-in label selector for source Secrets (`--secret-label-selector`): parsed from
//! Kubernetes' selector syntax, sent to the apiserver for the Secret watch, and checked on
//! every Secret the operator reads, so a user who may create BasetenSecrets cannot push an
//! arbitrary Secret of the namespace.

use std::collections::{BTreeMap, BTreeSet};

use kube::core::{Expression, Selector, SelectorExt};

/// Longest label name, and longest label value (Kubernetes' limits).
const NAME_MAX: usize = 63;
/// Longest prefix of a label key (a DNS subdomain).
const PREFIX_MAX: usize = 253;

/// A label selector, parsed as strictly as the apiserver parses one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretSelector {
    parsed: Selector,
    /// The canonical text of `parsed`, the one sent to the apiserver.
    text: String,
}

impl SecretSelector {
    /// Parses `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)` and `k notin (a,b)` terms
    /// separated by commas, with keys and values checked as the apiserver checks them, so a
    /// selector accepted here is never refused by the Secret watch.
    pub fn parse(text: &str) -> Result<Self, String> {
        let fail = |why: String| format!("{why} in label selector {text:?}");
        let tokens = lex(text);
        let mut at = 0;
        let mut expressions = Vec::new();
        loop {
            expressions.push(parse_term(&tokens, &mut at).map_err(fail)?);
            match tokens.get(at) {
                None => break,
                Some(Token::Comma) => at += 1,
                Some(other) => return Err(fail(format!("expected ',' or the end, found {other}"))),
            }
        }
        let parsed: Selector = expressions.into_iter().collect();
        Ok(Self {
            text: parsed.to_string(),
            parsed,
        })
    }

    /// The canonical text: what the Secret watch sends, and what messages quote.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether a Secret with `labels` may be read.
    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        self.parsed.matches(labels.unwrap_or(&BTreeMap::new()))
    }
}

/// A token of the selector syntax; words are everything between the others and spaces.
#[derive(Debug, PartialEq, Eq)]
enum Token<'a> {
    Word(&'a str),
    Not,
    Equal,
    NotEqual,
    Open,
    Close,
    Comma,
}

impl std::fmt::Display for Token<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Token::Word(word) => write!(f, "{word:?}"),
            Token::Not => f.write_str("'!'"),
            Token::Equal => f.write_str("'='"),
            Token::NotEqual => f.write_str("'!='"),
            Token::Open => f.write_str("'('"),
            Token::Close => f.write_str("')'"),
            Token::Comma => f.write_str("','"),
        }
    }
}

fn lex(text: &str) -> Vec<Token<'_>> {
    // The apiserver's separators: ASCII spaces and the operators' characters.
    let special = |c: char| c.is_ascii_whitespace() || "!=(),".contains(c);
    let mut tokens = Vec::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let (token, len) = match c {
            _ if c.is_ascii_whitespace() => (None, 1),
            '!' if rest.starts_with("!=") => (Some(Token::NotEqual), 2),
            '!' => (Some(Token::Not), 1),
            // "==" means "=".
            '=' if rest.starts_with("==") => (Some(Token::Equal), 2),
            '=' => (Some(Token::Equal), 1),
            '(' => (Some(Token::Open), 1),
            ')' => (Some(Token::Close), 1),
            ',' => (Some(Token::Comma), 1),
            _ => {
                let len = rest.find(special).unwrap_or(rest.len());
                (Some(Token::Word(&rest[..len])), len)
            }
        };
        tokens.extend(token);
        rest = &rest[len..];
    }
    tokens
}

/// One term from `tokens[*at..]`, leaving `at` past it.
fn parse_term(tokens: &[Token<'_>], at: &mut usize) -> Result<Expression, String> {
    let negated = tokens.get(*at) == Some(&Token::Not);
    *at += usize::from(negated);
    let key = match tokens.get(*at) {
        Some(Token::Word(word)) => valid_key(word)?,
        Some(other) => return Err(format!("expected a label key, found {other}")),
        None => return Err("expected a label key, found the end".into()),
    };
    *at += 1;
    if negated {
        return Ok(Expression::DoesNotExist(key));
    }
    let operator = tokens.get(*at);
    match operator {
        None | Some(Token::Comma) => Ok(Expression::Exists(key)),
        Some(Token::Equal | Token::NotEqual) => {
            *at += 1;
            // An empty value is allowed: "k=" selects the label with an empty value.
            let value = match tokens.get(*at) {
                Some(Token::Word(word)) => {
                    *at += 1;
                    valid_value(word)?
                }
                _ => String::new(),
            };
            Ok(match operator {
                Some(Token::Equal) => Expression::Equal(key, value),
                _ => Expression::NotEqual(key, value),
            })
        }
        Some(Token::Word(word @ ("in" | "notin"))) => {
            *at += 1;
            let values = parse_set(tokens, at)?;
            Ok(match *word {
                "in" => Expression::In(key, values),
                _ => Expression::NotIn(key, values),
            })
        }
        Some(other) => Err(format!(
            "expected '=', '==', '!=', 'in', 'notin', ',' or the end after key {key:?}, found {other}"
        )),
    }
}

/// A parenthesised, comma-separated, non-empty set of values.
fn parse_set(tokens: &[Token<'_>], at: &mut usize) -> Result<BTreeSet<String>, String> {
    if tokens.get(*at) != Some(&Token::Open) {
        return Err("expected '(' after 'in' or 'notin'".into());
    }
    *at += 1;
    let mut values = BTreeSet::new();
    loop {
        match tokens.get(*at) {
            Some(Token::Word(word)) => values.insert(valid_value(word)?),
            _ => return Err("expected a value in the set of 'in' or 'notin'".into()),
        };
        *at += 1;
        match tokens.get(*at) {
            Some(Token::Comma) => *at += 1,
            Some(Token::Close) => {
                *at += 1;
                return Ok(values);
            }
            _ => return Err("expected ',' or ')' in the set of 'in' or 'notin'".into()),
        }
    }
}

/// A label name or value's characters: ASCII letters and digits, '-', '_' and '.', starting
/// and ending with a letter or digit, at most 63 of them.
fn is_label_name(text: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    text.len() <= NAME_MAX
        && edge(text.chars().next())
        && edge(text.chars().last())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// A DNS subdomain: dot-separated parts of lowercase letters, digits and '-', each starting
/// and ending with a letter or digit, at most 253 characters in all.
fn is_dns_subdomain(text: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    text.len() <= PREFIX_MAX
        && text.split('.').all(|part| {
            edge(part.chars().next())
                && edge(part.chars().last())
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

/// The apiserver's keywords, never a key or a value.
fn is_keyword(word: &str) -> bool {
    matches!(word, "in" | "notin")
}

/// A label key: an optional DNS-subdomain prefix and '/', then a label name.
fn valid_key(key: &str) -> Result<String, String> {
    if is_keyword(key) {
        return Err(format!("{key:?} is a keyword, not a label key"));
    }
    let valid = match key.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_label_name(name),
        None => is_label_name(key),
    };
    valid.then(|| key.to_string()).ok_or_else(|| {
        format!(
            "{key:?} is not a label key (an optional DNS subdomain and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)"
        )
    })
}

/// A label value: empty, or a label name.
fn valid_value(value: &str) -> Result<String, String> {
    if is_keyword(value) {
        return Err(format!("{value:?} is a keyword, not a label value"));
    }
    (value.is_empty() || is_label_name(value))
        .then(|| value.to_string())
        .ok_or_else(|| {
            format!(
                "{value:?} is not a label value (at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    #[test]
    fn refuses_what_the_apiserver_refuses() {
        let long = "x".repeat(64);
        for bad in [
            "a=b=c",
            "a=b c",
            "a in ()",
            "a in (b,)",
            "a in (b",
            "a notin b",
            "!a=b",
            "-a=1",
            "a-=1",
            "a=-b",
            "a=b.",
            "Example.com/a=1",
            "example.com/=1",
            "a/b/c",
            "a>1",
            "in=x",
            "a=notin",
            &format!("{long}=1"),
            &format!("a={long}"),
            &format!("{}/a", "p".repeat(254)),
        ] {
            let error = SecretSelector::parse(bad).expect_err(bad);
            assert!(error.contains("label selector"), "{error}");
        }
        let error = SecretSelector::parse("a=b=c").unwrap_err();
        assert!(
            error.contains("'='") && error.contains("\"a=b=c\""),
            "{error}"
        );
        for good in [
            "a=",
            "a==",
            "a!=",
            "example.com/a-b_c.d=X.y-z_0",
            &"x".repeat(63),
        ] {
            assert!(SecretSelector::parse(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn the_watch_gets_a_canonical_rendering_of_what_was_parsed() {
        let parsed =
            SecretSelector::parse(" team in ( ml , infra ) , tier != dev,owned,! legacy,x==1,y=")
                .unwrap();
        assert_eq!(
            parsed.text(),
            "team in (infra,ml),tier!=dev,owned,!legacy,x=1,y="
        );
        assert_eq!(SecretSelector::parse(parsed.text()), Ok(parsed));
    }

    /// A key the apiserver takes: an optional prefix, then a name.
    fn key() -> impl Strategy<Value = String> {
        "([a-z0-9]{1,4}(-[a-z0-9]{1,3})?(\\.[a-z0-9]{1,4}){0,2}/)?[A-Za-z0-9]([A-Za-z0-9._-]{0,8}[A-Za-z0-9])?"
            .prop_filter("not a keyword", |k| !is_keyword(k))
    }

    fn value() -> impl Strategy<Value = String> {
        "([A-Za-z0-9]([A-Za-z0-9._-]{0,8}[A-Za-z0-9])?)?"
            .prop_filter("not a keyword", |v| !is_keyword(v))
    }

    /// A term as a user might write it, spaces included.
    fn term() -> impl Strategy<Value = String> {
        let values =
            prop::collection::vec(value().prop_filter("set values", |v| !v.is_empty()), 1..4)
                .prop_map(|values| values.join(" , "));
        prop_oneof![
            (key(), "=|==|!=", value()).prop_map(|(k, op, v)| format!("{k} {op} {v}")),
            (key(), "in|notin", values).prop_map(|(k, op, v)| format!("{k} {op} ( {v} )")),
            key(),
            key().prop_map(|k| format!("! {k}")),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn parsing_never_panics_and_its_rendering_parses_the_same(
            text in prop_oneof![".*", "[a-z0-9./!=(), _-]{0,40}"],
        ) {
            if let Ok(parsed) = SecretSelector::parse(&text) {
                prop_assert_eq!(SecretSelector::parse(parsed.text()), Ok(parsed));
            }
        }

        #[test]
        fn every_valid_selector_parses_and_renders_to_itself(
            terms in prop::collection::vec(term(), 1..5),
        ) {
            let text = terms.join(",");
            let parsed = SecretSelector::parse(&text);
            prop_assert!(parsed.is_ok(), "{:?}: {:?}", text, parsed);
            let parsed = parsed.unwrap();
            prop_assert_eq!(SecretSelector::parse(parsed.text()), Ok(parsed));
        }
    }
}
