//! From a set's spec and the key names of its Secrets, the BasetenSecrets the set stands
//! for: which keys, under which Baseten names, as which objects; and what keeps a key out
//! (a name the rules make invalid, two keys with one Baseten name). Pure: no I/O.

use std::collections::BTreeMap;

use regex::Regex;

use crate::baseten::normalised_name;
use crate::crd_set::{BasetenSecretSetSpec, Case};
use crate::hash::short_hex;

/// The longest regular expression the operator compiles, in bytes once compiled.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// The longest object name Kubernetes takes.
const MAX_OBJECT_NAME: usize = 253;

/// A set's rules, compiled.
#[derive(Debug)]
pub struct Rules {
    keys: Option<Regex>,
    template: String,
    rewrite: Vec<Rule>,
}

#[derive(Debug)]
enum Rule {
    Replace(Regex, String),
    Case(Case),
}

fn compile(what: &str, source: &str) -> Result<Regex, String> {
    regex::RegexBuilder::new(source)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|error| {
            // The error's first line names the problem; the rest draws the pattern.
            let first = error.to_string();
            let first = first.lines().last().unwrap_or_default().trim().to_string();
            format!("{what} {source:?} is not a valid regular expression: {first}")
        })
}

impl Rules {
    /// The rules of `spec`, or why they cannot be used.
    pub fn of(spec: &BasetenSecretSetSpec) -> Result<Self, String> {
        if spec.secret_name.is_some() == spec.secret_selector.is_some() {
            return Err("set exactly one of spec.secretName and spec.secretSelector".into());
        }
        let keys = spec
            .keys
            .as_deref()
            .map(|k| compile("spec.keys", k))
            .transpose()?;
        let default = match spec.secret_name {
            Some(_) => "{key}",
            None => "{secret}_{key}",
        };
        let template = spec.baseten_name.as_deref().unwrap_or(default).to_string();
        let mut rewrite = Vec::new();
        for (i, rule) in spec.rewrite.iter().enumerate() {
            rewrite.push(match (&rule.regexp, rule.case) {
                (Some(r), None) => Rule::Replace(
                    compile(&format!("spec.rewrite[{i}].regexp.source"), &r.source)?,
                    r.target.clone(),
                ),
                (None, Some(case)) => Rule::Case(case),
                _ => {
                    return Err(format!(
                        "spec.rewrite[{i}] must set exactly one of regexp and case"
                    ));
                }
            });
        }
        Ok(Self {
            keys,
            template,
            rewrite,
        })
    }

    /// Whether `key` is pushed.
    pub fn selects(&self, key: &str) -> bool {
        self.keys.as_ref().is_none_or(|k| k.is_match(key))
    }

    /// The Baseten name of `key` of Secret `secret`: the template, then each rule in order.
    pub fn baseten_name(&self, secret: &str, key: &str) -> String {
        let mut name = self
            .template
            .replace("{secret}", secret)
            .replace("{key}", key);
        for rule in &self.rewrite {
            name = match rule {
                Rule::Replace(source, target) => source.replace_all(&name, target).into_owned(),
                Rule::Case(Case::Lower) => name.to_lowercase(),
                Rule::Case(Case::Upper) => name.to_uppercase(),
            };
        }
        name
    }
}

/// Why `name` is not a Baseten name, if it is not one.
pub fn invalid_baseten_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 253 {
        Some("it is longer than 253 characters")
    } else if name == "." || name == ".." {
        Some("it is '.' or '..'")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    {
        Some("it has characters other than letters, digits, '-', '.' and '_'")
    } else {
        None
    }
}

/// A part of an object name that can be used as it is: lower-case letters, digits and '-',
/// beginning and ending with a letter or digit.
fn usable(part: &str) -> bool {
    let bytes = part.as_bytes();
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    edge(bytes.first())
        && edge(bytes.last())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// The name of the BasetenSecret of `key` of `secret` in set `set`: `{set}-{key}` (with a
/// selector, `{set}-{secret}.{key}`), always a valid object name. A key that is not usable
/// as it is (upper case, '_', '.', too long) is made so, and a hash of the original keeps
/// names apart.
pub fn child_name(set: &str, secret: Option<&str>, key: &str) -> String {
    let readable = match secret {
        Some(secret) => format!("{set}-{secret}.{key}"),
        None => format!("{set}-{key}"),
    };
    let exact = secret.is_none_or(usable) && usable(key);
    if exact && readable.len() <= MAX_OBJECT_NAME {
        return readable;
    }
    let tidy = |part: &str| -> String {
        part.chars()
            .map(|c| match c.to_ascii_lowercase() {
                c @ ('a'..='z' | '0'..='9') => c,
                _ => '-',
            })
            .collect()
    };
    let mut name = match secret {
        Some(secret) => format!("{set}-{}-{}", tidy(secret), tidy(key)),
        None => format!("{set}-{}", tidy(key)),
    };
    let hash = short_hex(&format!("{}\u{0}{key}", secret.unwrap_or_default()));
    name.truncate(MAX_OBJECT_NAME - hash.len() - 1);
    let name = name.trim_end_matches(['-', '.']);
    format!("{name}-{hash}")
}

/// One key the set pushes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    /// The Secret.
    pub secret: String,
    /// The key.
    pub key: String,
    /// Its Baseten name.
    pub baseten_name: String,
    /// Its BasetenSecret.
    pub child: String,
}

/// What a set stands for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The keys pushed, by Secret then key.
    pub children: Vec<Wanted>,
    /// Keys whose Baseten name the rules made invalid, with why.
    pub invalid: Vec<(Wanted, &'static str)>,
    /// Keys left out because another key of the set has the same Baseten name, grouped.
    pub duplicates: Vec<Vec<Wanted>>,
}

/// The plan of set `set` with `rules` over `secrets` (each Secret's name and key names);
/// `by_selector` names children after their Secret too.
pub fn plan(
    set: &str,
    rules: &Rules,
    secrets: &[(String, Vec<String>)],
    by_selector: bool,
) -> Plan {
    let mut plan = Plan::default();
    let mut by_name: BTreeMap<String, Vec<Wanted>> = BTreeMap::new();
    for (secret, keys) in secrets {
        for key in keys.iter().filter(|k| rules.selects(k)) {
            let wanted = Wanted {
                secret: secret.clone(),
                key: key.clone(),
                baseten_name: rules.baseten_name(secret, key),
                child: child_name(set, by_selector.then_some(secret.as_str()), key),
            };
            match invalid_baseten_name(&wanted.baseten_name) {
                Some(why) => plan.invalid.push((wanted, why)),
                None => by_name
                    .entry(normalised_name(&wanted.baseten_name))
                    .or_default()
                    .push(wanted),
            }
        }
    }
    for (_, group) in by_name {
        if group.len() == 1 {
            plan.children.extend(group);
        } else {
            plan.duplicates.push(group);
        }
    }
    plan.children
        .sort_by(|a, b| (&a.secret, &a.key).cmp(&(&b.secret, &b.key)));
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd_set::{RegexpRewrite, Rewrite};

    fn spec(value: serde_json::Value) -> BasetenSecretSetSpec {
        serde_json::from_value(value).unwrap()
    }

    fn keys(names: &[&str]) -> Vec<(String, Vec<String>)> {
        vec![(
            "creds".into(),
            names.iter().map(|k| k.to_string()).collect(),
        )]
    }

    #[test]
    fn the_readme_example_maps_hf_and_openai_keys_and_leaves_the_rest() {
        let rules = Rules::of(&spec(serde_json::json!({
            "secretName": "ml-credentials",
            "keys": "^(HF|OPENAI)_",
            "rewrite": [
                {"regexp": {"source": "^HF_(.*)$", "target": "hf_$1"}},
                {"case": "lower"},
            ],
        })))
        .unwrap();
        let plan = plan(
            "ml-keys",
            &rules,
            &keys(&["HF_TOKEN", "OPENAI_API_KEY", "DB_URL"]),
            false,
        );
        let names: Vec<_> = plan
            .children
            .iter()
            .map(|w| (w.key.as_str(), w.baseten_name.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("HF_TOKEN", "hf_token"),
                ("OPENAI_API_KEY", "openai_api_key")
            ]
        );
        assert!(plan.invalid.is_empty() && plan.duplicates.is_empty());
    }

    #[test]
    fn templates_default_by_source_and_rules_apply_in_order() {
        let by_name = Rules::of(&spec(serde_json::json!({"secretName": "s"}))).unwrap();
        assert_eq!(by_name.baseten_name("s", "k"), "k");
        let by_labels = Rules::of(&spec(
            serde_json::json!({"secretSelector": {"matchLabels": {"a": "b"}}}),
        ))
        .unwrap();
        assert_eq!(by_labels.baseten_name("s", "k"), "s_k");
        let mut ordered =
            spec(serde_json::json!({"secretName": "s", "basetenName": "{secret}-{key}"}));
        ordered.rewrite = vec![
            Rewrite {
                regexp: None,
                case: Some(Case::Upper),
            },
            Rewrite {
                regexp: Some(RegexpRewrite {
                    source: "-".into(),
                    target: "_".into(),
                }),
                case: None,
            },
        ];
        assert_eq!(
            Rules::of(&ordered).unwrap().baseten_name("db", "url"),
            "DB_URL"
        );
    }

    #[test]
    fn bad_rules_and_names_say_what_is_wrong() {
        let bad =
            Rules::of(&spec(serde_json::json!({"secretName": "s", "keys": "(x"}))).unwrap_err();
        assert!(bad.contains("spec.keys") && bad.contains("(x"), "{bad}");
        let both = Rules::of(&spec(
            serde_json::json!({"secretName": "s", "secretSelector": {}}),
        ))
        .unwrap_err();
        assert!(both.contains("exactly one"), "{both}");
        let rules = Rules::of(&spec(serde_json::json!({"secretName": "s",
            "rewrite": [{"regexp": {"source": "^.*$", "target": ""}}]})))
        .unwrap();
        let plan = plan("set", &rules, &keys(&["k"]), false);
        assert!(plan.children.is_empty());
        assert_eq!(plan.invalid[0].1, "it is empty");
        assert_eq!(
            invalid_baseten_name("a/b"),
            Some("it has characters other than letters, digits, '-', '.' and '_'")
        );
        assert_eq!(invalid_baseten_name(".."), Some("it is '.' or '..'"));
        assert_eq!(
            invalid_baseten_name(&"x".repeat(254)),
            Some("it is longer than 253 characters")
        );
        assert_eq!(invalid_baseten_name("hf_token"), None);
    }

    #[test]
    fn keys_with_one_name_in_baseten_are_left_out_together() {
        let rules = Rules::of(&spec(serde_json::json!({"secretName": "s"}))).unwrap();
        let plan = plan("set", &rules, &keys(&["a-b", "a_b", "a.b", "c"]), false);
        assert_eq!(plan.children.len(), 1);
        assert_eq!(plan.children[0].key, "c");
        let group: Vec<_> = plan.duplicates[0].iter().map(|w| w.key.as_str()).collect();
        assert_eq!(group, ["a-b", "a_b", "a.b"]);
    }

    #[test]
    fn child_names_are_valid_objects_and_apart() {
        assert_eq!(child_name("set", None, "token"), "set-token");
        assert_eq!(child_name("set", Some("creds"), "token"), "set-creds.token");
        let upper = child_name("set", None, "HF_TOKEN");
        let lower = child_name("set", None, "hf_token");
        assert!(
            upper.starts_with("set-hf-token-") && upper != lower,
            "{upper} {lower}"
        );
        let long = child_name(&"s".repeat(200), Some(&"c".repeat(200)), &"K".repeat(200));
        assert!(long.len() <= 253, "{}", long.len());
        let valid =
            regex::Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
                .unwrap();
        for name in [
            upper,
            lower,
            long,
            child_name("set", None, "-x-"),
            child_name("set", Some("a.b"), "c"),
        ] {
            assert!(valid.is_match(&name), "{name}");
        }
        // A Secret "a" with key "b-c" and a Secret "a-b" with key "c" stay apart.
        assert_ne!(
            child_name("set", Some("a"), "b-c"),
            child_name("set", Some("a-b"), "c")
        );
    }
}
