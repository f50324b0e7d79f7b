//! Carrying out a planned write, and deleting a name a resource no longer wants: the
//! Baseten calls of a reconcile, in order, each step checking its own precondition.

use secrecy::SecretString;
use tracing::{debug, info, warn};

use super::plan::{Acted, Write, moved};
use crate::baseten::{BasetenError, Deleted, SecretV1, TeamV1, normalised_name};
use crate::claims::{Claimant, Target};
use crate::context::Context;
use crate::crd::BasetenSecret;
use crate::credentials::ApiKey;

/// Makes the write: the team first (when one is named), then the existing name (with
/// IfNotExists), the upsert, and the delete of the previous name when the write moved.
pub async fn write(
    write: &Write,
    object: &BasetenSecret,
    ctx: &Context,
    api_key: &ApiKey,
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
        let decision = write.decision;
        info!(?decision, baseten_name = %write.baseten_name, "wrote secret to Baseten");
        let release_failed = match &write.previous {
            Some(previous) if moved(previous, &secret, &write.baseten_name) => {
                let team = previous.team_name.as_deref();
                let old = &previous.baseten_name;
                match release(object, ctx, api_key, team, old).await {
                    Ok(_) => None,
                    Err(error) => {
                        warn!(error = %error, "deleting the previous Baseten name failed");
                        Some((old.clone(), error))
                    }
                }
            }
            _ => None,
        };
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

/// What became of a Baseten name this resource no longer wants.
#[derive(Debug)]
pub enum Released {
    /// Deleted now, or Baseten had no such secret.
    Deleted(Deleted),
    /// Another resource targets or holds the name; it stays.
    Claimed(String),
}

/// Deletes the Baseten secret `baseten_name` of team `team_name` that `object` wrote,
/// unless another resource claims it.
pub async fn release(
    object: &BasetenSecret,
    ctx: &Context,
    api_key: &ApiKey,
    team_name: Option<&str>,
    baseten_name: &str,
) -> Result<Released, BasetenError> {
    if let Some(other) = ctx.claims.other_claimant(
        &Target::in_team_of(object, baseten_name),
        &Claimant::of(object),
    ) {
        info!(baseten_name = %baseten_name, claimed_by = %other, "Baseten secret kept: another resource uses the name");
        return Ok(Released::Claimed(other.to_string()));
    }
    // The team the name was written to, as Baseten named it in its answer.
    let team_id = match team_name {
        None => None,
        Some(team_name) => match api_key.client.team(Some(team_name)).await? {
            Some(team) if team.default => None,
            Some(team) => Some(team.id),
            // A lookup that misses proves nothing: the listing may lag or the team may have
            // been renamed, and its secret may still be there.
            None => return Err(BasetenError::TeamNotFound(team_name.to_string())),
        },
    };
    let deleted = api_key
        .client
        .delete_in(team_id.as_deref(), baseten_name)
        .await?;
    info!(baseten_name = %baseten_name, ?deleted, "deleted secret in Baseten");
    Ok(Released::Deleted(deleted))
}
