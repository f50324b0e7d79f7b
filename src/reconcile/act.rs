//! Carrying out a planned write, and deleting a name a resource no longer wants: the
//! Baseten calls of a reconcile, in order, each step checking its own precondition.

use secrecy::SecretString;
use tracing::{debug, info, warn};

use std::sync::Arc;

use super::identity::{claimant_of, recheck_others};
use super::pending::{Failed, to_retry};
use super::plan::{Acted, Write, moved};
use crate::baseten::{BasetenError, Deleted, SecretV1, TeamV1, normalised_name};
use crate::context::Context;
use crate::crd::{BasetenSecret, PendingDeletion};
use crate::credentials::ApiKey;
use crate::error::Error;

/// Makes the write: the team first (when one is named), then the existing name (with
/// IfNotExists), the upsert, and the deletes of the previous name when the write moved and
/// of the pending deletions.
pub async fn write(
    write: &Write,
    object: &BasetenSecret,
    ctx: &Context,
    api_key: &Arc<ApiKey>,
    value: &SecretString,
) -> Acted {
    let result = async {
        let team = match &write.team {
            None => None,
            Some(wanted) => match api_key.client.team(Some(wanted)).await? {
                Some(team) => Some(team),
                None => return Ok(Acted::TeamNotFound),
            },
        };
        if write.unless_exists
            && let Some(found) = find(api_key, team.as_ref(), &write.baseten_name).await?
        {
            debug!("IfNotExists: the name exists in Baseten and was not written here");
            return Ok(Acted::Exists(found));
        }
        let team_id = team.as_ref().map(|t| t.id.as_str());
        let secret = (api_key.client)
            .upsert_in(team_id, &write.baseten_name, value)
            .await?;
        ctx.metrics.wrote();
        recheck_others(object, ctx);
        let decision = write.decision;
        info!(?decision, baseten_name = %write.baseten_name, "wrote secret to Baseten");
        // After the upsert, so a name is deleted only once its value is under the new
        // one, and Baseten's answer tells which team the wanted name is in.
        let mut unwanted: Vec<PendingDeletion> = (write.previous.iter())
            .filter(|previous| moved(previous, &secret, &write.baseten_name))
            .cloned()
            .collect();
        let team_name = secret.team_name.as_deref();
        for pending in to_retry(&write.pending, &write.baseten_name, team_name) {
            if !unwanted.contains(&pending) {
                unwanted.push(pending);
            }
        }
        let release_failed = release_all(object, ctx, api_key, &unwanted).await;
        Ok::<_, BasetenError>(Acted::Written {
            secret,
            release_failed,
        })
    };
    result.await.unwrap_or_else(|error| {
        warn!(error = %error, "Baseten write failed");
        Acted::Failed(error)
    })
}

/// The Baseten secret named `baseten_name` (in Baseten's normalised sense) in `team`, or
/// the key's default team, if it exists.
async fn find(
    api_key: &ApiKey,
    team: Option<&TeamV1>,
    baseten_name: &str,
) -> Result<Option<SecretV1>, BasetenError> {
    let scope = match team {
        Some(team) => Some(team.clone()),
        None => api_key.client.team(None).await?,
    };
    let wanted = normalised_name(baseten_name);
    Ok(api_key
        .client
        .list_in(scope.as_ref().map(|t| t.id.as_str()))
        .await?
        .into_iter()
        .find(|s| normalised_name(&s.name) == wanted))
}

/// Deletes each of `names`, Baseten secrets `object` wrote and no longer wants (see
/// [`release`]); returns those whose delete failed.
pub async fn release_all(
    object: &BasetenSecret,
    ctx: &Context,
    api_key: &Arc<ApiKey>,
    names: &[PendingDeletion],
) -> Failed {
    let mut failed = Vec::new();
    for name in names {
        let team_name = name.team_name.as_deref();
        match release(object, ctx, api_key, team_name, &name.baseten_name).await {
            Ok(_) => {}
            Err(error) => {
                warn!(error = %error, "deleting a Baseten name no longer wanted failed");
                failed.push((name.clone(), error));
            }
        }
    }
    failed
}

/// What became of a Baseten name this resource no longer wants.
#[derive(Debug)]
pub enum Released {
    /// Deleted now, or Baseten had no such secret.
    Deleted(Deleted),
    /// Another resource targets or holds the name; it stays.
    Claimed(String),
}

/// Deletes the Baseten secret `baseten_name` of team `team_name` that `object` wrote,
/// unless another resource claims it, however that one spells the key and team.
pub async fn release(
    object: &BasetenSecret,
    ctx: &Context,
    api_key: &Arc<ApiKey>,
    team_name: Option<&str>,
    baseten_name: &str,
) -> Result<Released, Error> {
    // The team the name was written to, as Baseten named it in its answer.
    let team = match team_name {
        None => None,
        Some(team_name) => match api_key.client.team(Some(team_name)).await? {
            Some(team) => Some(team),
            // A lookup that misses proves nothing: the listing may lag or the team may have
            // been renamed, and its secret may still be there.
            None => return Err(BasetenError::TeamNotFound(team_name.to_string()).into()),
        },
    };
    // Checked in the team the name is in, which is not spec.team after a move.
    if let Some(other) = claimant_of(object, ctx, api_key, team.as_ref(), baseten_name).await? {
        info!(baseten_name = %baseten_name, claimed_by = %other, "Baseten secret kept: another resource uses the name");
        return Ok(Released::Claimed(other.to_string()));
    }
    let team_id = team.filter(|t| !t.default).map(|t| t.id);
    let deleted = api_key
        .client
        .delete_in(team_id.as_deref(), baseten_name)
        .await?;
    info!(baseten_name = %baseten_name, ?deleted, "deleted secret in Baseten");
    Ok(Released::Deleted(deleted))
}
