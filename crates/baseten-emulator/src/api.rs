//! The Baseten API surface: `/v1/secrets`, `/v1/teams` and their team-scoped variants.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::state::{Emulator, Fault, RetryAfter, Secret, Team};

/// The body Baseten documents for 429 answers.
pub(crate) const RATE_LIMIT_MESSAGE: &str = "Rate limit exceeded. Please try again later.";

pub(crate) fn routes(state: Arc<Emulator>) -> Router {
    Router::new()
        .route("/v1", any(handle))
        .route("/v1/{*rest}", any(handle))
        .fallback(any(not_found))
        .with_state(state)
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "NOT_FOUND", "No such endpoint")
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "code": code, "message": message })),
    )
        .into_response()
}

fn rate_limited(retry_after: u64) -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        axum::Json(json!({ "error": RATE_LIMIT_MESSAGE, "retry_after": retry_after })),
    )
        .into_response()
}

fn default_error_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "VALIDATION_ERROR",
        401 => "UNAUTHORIZED",
        403 => "FORBIDDEN",
        404 => "NOT_FOUND",
        409 => "CONFLICT",
        _ if status.is_server_error() => "INTERNAL_ERROR",
        _ => "ERROR",
    }
}

/// Extracts the API key from `Api-Key <key>` or `Bearer <key>`.
fn api_key(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    let key = key.trim();
    let known = scheme.eq_ignore_ascii_case("Api-Key") || scheme.eq_ignore_ascii_case("Bearer");
    (known && !key.is_empty()).then(|| key.to_string())
}

/// One matched endpoint, with its decoded path parameters.
enum Endpoint {
    ListSecrets { team: Option<String> },
    UpsertSecret { team: Option<String> },
    DeleteSecret { team: Option<String>, name: String },
    ListTeams,
    GetTeam { team: String },
}

/// The team id names no team of the caller's organisation.
struct NoTeam;

impl NoTeam {
    fn response(self) -> Response {
        error(StatusCode::NOT_FOUND, "NOT_FOUND", "Team not found")
    }
}

/// Why a request matched no endpoint.
enum NoRoute {
    NotFound,
    MethodNotAllowed,
}

impl NoRoute {
    fn response(self) -> Response {
        match self {
            Self::NotFound => error(StatusCode::NOT_FOUND, "NOT_FOUND", "No such endpoint"),
            Self::MethodNotAllowed => error(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "Method not allowed",
            ),
        }
    }
}

/// Matches a path and method to an endpoint and its rate-limit bucket.
fn route(method: &Method, path: &str) -> Result<(Endpoint, &'static str), NoRoute> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let decode = |s: &str| percent_decode(s);
    let not_allowed = || NoRoute::MethodNotAllowed;
    match segments.as_slice() {
        ["v1", "secrets"] => match *method {
            Method::GET => Ok((Endpoint::ListSecrets { team: None }, "GET /v1/secrets")),
            Method::POST => Ok((Endpoint::UpsertSecret { team: None }, "POST /v1/secrets")),
            _ => Err(not_allowed()),
        },
        ["v1", "secrets", name] if !name.is_empty() => match *method {
            Method::DELETE => Ok((
                Endpoint::DeleteSecret {
                    team: None,
                    name: decode(name),
                },
                "DELETE /v1/secrets/{secret_name}",
            )),
            _ => Err(not_allowed()),
        },
        ["v1", "teams"] => match *method {
            Method::GET => Ok((Endpoint::ListTeams, "GET /v1/teams")),
            _ => Err(not_allowed()),
        },
        ["v1", "teams", team] if !team.is_empty() => match *method {
            Method::GET => Ok((
                Endpoint::GetTeam { team: decode(team) },
                "GET /v1/teams/{team_id}",
            )),
            _ => Err(not_allowed()),
        },
        ["v1", "teams", team, "secrets"] if !team.is_empty() => {
            let team = Some(decode(team));
            match *method {
                Method::GET => Ok((
                    Endpoint::ListSecrets { team },
                    "GET /v1/teams/{team_id}/secrets",
                )),
                Method::POST => Ok((
                    Endpoint::UpsertSecret { team },
                    "POST /v1/teams/{team_id}/secrets",
                )),
                _ => Err(not_allowed()),
            }
        }
        ["v1", "teams", team, "secrets", name] if !team.is_empty() && !name.is_empty() => {
            match *method {
                Method::DELETE => Ok((
                    Endpoint::DeleteSecret {
                        team: Some(decode(team)),
                        name: decode(name),
                    },
                    "DELETE /v1/teams/{team_id}/secrets/{secret_name}",
                )),
                _ => Err(not_allowed()),
            }
        }
        _ => Err(NoRoute::NotFound),
    }
}

/// A path segment with its percent-escapes decoded; an escape that is not two hex digits
/// stays as written, and bytes that are not UTF-8 become U+FFFD.
fn percent_decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

fn secret_json(secret: &Secret, team: &Team) -> Value {
    json!({
        "id": secret.id,
        "name": secret.name,
        "team_name": team.name,
        "created_at": secret.created_at,
    })
}

fn team_json(team: &Team) -> Value {
    json!({
        "id": team.id,
        "name": team.name,
        "default": team.default,
        "created_at": team.created_at,
    })
}

/// The upsert body. Both fields are required; unknown fields are ignored.
#[derive(Deserialize)]
struct UpsertRequest {
    name: String,
    value: String,
}

/// Whether a name is in the subset Baseten's own CLI accepts.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

async fn handle(
    State(state): State<Arc<Emulator>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let received_at = jiff::Timestamp::now();
    let path = uri.path().to_string();
    // Only the name is kept for the request log; the value is never looked at here.
    let name = (method == Method::POST)
        .then(|| serde_json::from_slice::<UpsertName>(&body).ok())
        .flatten()
        .map(|b| b.name);
    let key = api_key(&headers);
    if let Some(fault) = state.take_fault(method.as_str(), &path, key.as_deref())
        && let Some(response) = apply_fault(&fault).await
    {
        let status = response.status().as_u16();
        state.record(method.as_str(), &path, status, received_at, name);
        return response;
    }
    let response = answer(&state, &method, &path, &headers, &body);
    let status = response.status().as_u16();
    state.record(method.as_str(), &path, status, received_at, name);
    response
}

/// The name field of an upsert body.
#[derive(Deserialize)]
struct UpsertName {
    name: String,
}

/// Delays as the fault says; returns the faulty answer, or `None` to process normally.
async fn apply_fault(fault: &Fault) -> Option<Response> {
    if fault.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(fault.latency_ms)).await;
    }
    if fault.drop_connection {
        // A body that fails after the headers makes the server abort the connection.
        let stream = futures::stream::once(async {
            Err::<Bytes, std::io::Error>(std::io::Error::other("connection dropped by fault"))
        });
        return Some(
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from_stream(stream))
                .expect("static response parts are valid"),
        );
    }
    let status = StatusCode::from_u16(fault.status?).ok()?;
    let mut response = match (&fault.raw_body, &fault.body, status) {
        (Some(raw), _, _) => (
            status,
            [(
                header::CONTENT_TYPE,
                fault.content_type.as_deref().unwrap_or("text/html"),
            )],
            raw.clone(),
        )
            .into_response(),
        (None, Some(body), _) => (status, axum::Json(body.clone())).into_response(),
        (None, None, StatusCode::TOO_MANY_REQUESTS) => rate_limited(1),
        (None, None, _) => error(status, default_error_code(status), "Injected fault"),
    };
    for (name, value) in &fault.headers {
        if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            header::HeaderValue::from_str(value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    Some(response)
}

fn answer(
    state: &Emulator,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let Some(key) = api_key(headers).filter(|key| state.authenticate(key)) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "Missing or invalid API key. Use the header 'Authorization: Api-Key <key>'.",
        );
    };
    let (endpoint, template) = match route(method, path) {
        Ok(matched) => matched,
        Err(no_route) => return no_route.response(),
    };
    if let Err(RetryAfter(seconds)) = state.admit(&key, template) {
        return rate_limited(seconds);
    }
    let team_of = |team: &Option<String>| state.team(&key, team.as_deref()).ok_or(NoTeam);
    match endpoint {
        Endpoint::ListTeams => {
            let teams: Vec<Value> = state.teams(&key).iter().map(team_json).collect();
            axum::Json(json!({ "teams": teams })).into_response()
        }
        Endpoint::GetTeam { team } => match team_of(&Some(team)) {
            Ok(team) => axum::Json(team_json(&team)).into_response(),
            Err(NoTeam) => NoTeam.response(),
        },
        // Un-scoped, Baseten lists the secrets of every team the key can see; each item
        // names its team.
        Endpoint::ListSecrets { team: None } => {
            let secrets: Vec<Value> = state
                .teams(&key)
                .iter()
                .flat_map(|team| {
                    state
                        .list(&key, &team.id)
                        .iter()
                        .map(|secret| secret_json(secret, team))
                        .collect::<Vec<_>>()
                })
                .collect();
            axum::Json(json!({ "secrets": secrets })).into_response()
        }
        Endpoint::ListSecrets { team } => match team_of(&team) {
            Ok(team) => {
                let secrets: Vec<Value> = state
                    .list(&key, &team.id)
                    .iter()
                    .map(|secret| secret_json(secret, &team))
                    .collect();
                axum::Json(json!({ "secrets": secrets })).into_response()
            }
            Err(NoTeam) => NoTeam.response(),
        },
        Endpoint::UpsertSecret { team } => {
            let team = match team_of(&team) {
                Ok(team) => team,
                Err(NoTeam) => return NoTeam.response(),
            };
            let request: UpsertRequest = match serde_json::from_slice(body) {
                Ok(request) => request,
                Err(_) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "VALIDATION_ERROR",
                        "The body must be a JSON object with string fields 'name' and 'value'",
                    );
                }
            };
            if !valid_name(&request.name) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "VALIDATION_ERROR",
                    "Secret names may contain only letters, digits, '-', '.' and '_' (at most 253)",
                );
            }
            let secret = state.upsert(&key, &team.id, &request.name, request.value);
            axum::Json(secret_json(&secret, &team)).into_response()
        }
        Endpoint::DeleteSecret { team, name } => {
            let team = match team_of(&team) {
                Ok(team) => team,
                Err(NoTeam) => return NoTeam.response(),
            };
            match state.delete(&key, &team.id, &name) {
                Some(name) => axum::Json(json!({ "name": name })).into_response(),
                None => error(StatusCode::NOT_FOUND, "NOT_FOUND", "Secret not found"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_documented_auth_schemes_are_accepted() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "Api-Key abc".parse().unwrap());
        assert_eq!(api_key(&headers).as_deref(), Some("abc"));
        headers.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(api_key(&headers).as_deref(), Some("abc"));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(api_key(&headers), None);
        headers.insert(header::AUTHORIZATION, "abc".parse().unwrap());
        assert_eq!(api_key(&headers), None);
    }

    #[test]
    fn escaped_path_segments_are_decoded() {
        assert_eq!(percent_decode("a%2Fb%20c"), "a/b c");
        assert_eq!(percent_decode("plain"), "plain");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
    }
}
