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

/// A path of `segments`, each escaped as a single path segment.
pub(super) fn escaped_path(segments: &[&str]) -> Result<String, BasetenError> {
    let encoding = || BasetenError::Transport("the request could not be encoded");
    let mut url = reqwest::Url::parse("http://path.invalid/").map_err(|_| encoding())?;
    url.path_segments_mut()
        .map_err(|_| encoding())?
        .clear()
        .extend(segments);
    Ok(url.path().to_string())
}
