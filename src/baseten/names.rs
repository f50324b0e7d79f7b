//! Secret names as Baseten compares them, and names escaped into request paths.

use super::error::BasetenError;

/// Baseten's identity of a secret name: every character that is not an ASCII letter or digit
/// is the same character, and case counts, so `hf_token`, `hf-token` and `hf.token` are one
/// secret.
pub fn normalised_name(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Whether `segment` can go into a path as itself. URLs drop "." and ".." segments (escaped
/// or not) and tabs and line breaks anywhere, and an empty segment names nothing: each would
/// send the request to another path. No Baseten name or team holds a control character.
fn sendable(segment: &str) -> bool {
    !matches!(segment, "" | "." | "..") && !segment.chars().any(char::is_control)
}

/// A path of `segments`, each escaped as a single path segment.
pub(super) fn escaped_path(segments: &[&str]) -> Result<String, BasetenError> {
    let encoding = || BasetenError::Transport("the request could not be encoded");
    if segments.iter().any(|s| !sendable(s)) {
        return Err(encoding());
    }
    let mut url = reqwest::Url::parse("http://path.invalid/").map_err(|_| encoding())?;
    url.path_segments_mut()
        .map_err(|_| encoding())?
        .clear()
        .extend(segments);
    Ok(url.path().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn names_normalise_character_for_character_and_once_for_all(name in ".*") {
            let normalised = normalised_name(&name);
            prop_assert_eq!(normalised.chars().count(), name.chars().count());
            prop_assert!(normalised.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
            prop_assert_eq!(normalised_name(&normalised), normalised.clone());
            let other_separators: String = name
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect();
            prop_assert_eq!(normalised_name(&other_separators), normalised);
        }

        #[test]
        fn every_segment_stays_one_segment_or_none_is_sent(
            segments in prop::collection::vec(prop_oneof![".*", "[./%2eE]{0,3}"], 1..4),
        ) {
            let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
            let unsendable = segments.iter().any(|s| !sendable(s));
            match escaped_path(&segments) {
                Ok(path) => {
                    prop_assert!(!unsendable, "{}", path);
                    prop_assert_eq!(path.matches('/').count(), segments.len(), "{}", path);
                    prop_assert!(!path.contains(['?', '#']), "{}", path);
                }
                Err(_) => prop_assert!(unsendable),
            }
        }
    }
}
