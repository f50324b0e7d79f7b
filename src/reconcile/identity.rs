//! Whether two resources that spell their target differently target one Baseten secret.
//!
//! The claims tell targets apart by spelling: which Secret holds the API key, and the team
//! as written (a name, an id, or nothing for the key's default team). Two spellings are one
//! secret when the keys are equal (compared by fingerprint, never as keys) and the teams
//! resolve to one id. This is looked at only for names that more than one spelling targets,
//! so the common case reads nothing; keys and team listings come from their caches.

use std::sync::Arc;

use kube::ResourceExt;
use tracing::debug;

use crate::baseten::{BasetenError, TeamV1};
use crate::claims::{Claimant, OPERATOR_KEY, Target, key_identity};
use crate::context::Context;
use crate::crd::{BasetenSecret, SecretKeyRef};
use crate::credentials::ApiKey;
use crate::error::Result;

/// The API key a target spells, or `None` when it names no usable key (a missing Secret or
/// key): such a resource writes nothing, so it is nobody's rival.
async fn key_of(ctx: &Context, target: &Target) -> Result<Option<Arc<ApiKey>>> {
    let Some((namespace, name, key)) = target.key_secret() else {
        return Ok((target.key() == OPERATOR_KEY).then(|| ctx.credentials.operator()));
    };
    let key_ref = SecretKeyRef {
        name: name.to_string(),
        key: key.to_string(),
    };
    let found = (ctx.credentials)
        .for_ref(
            &ctx.client,
            &ctx.index,
            ctx.secret_selector.as_ref(),
            namespace,
            &key_ref,
        )
        .await?;
    Ok(found.ok())
}

/// The id of the team `spelled` (empty: the key's default team), if the key sees it.
async fn team_id(api_key: &ApiKey, spelled: &str) -> Result<Option<String>, BasetenError> {
    let wanted = (!spelled.is_empty()).then_some(spelled);
    Ok(api_key.client.team(wanted).await?.map(|t| t.id))
}

/// One side of a comparison: its key, its team as spelled, and the team's id once looked up.
struct Side {
    key: Arc<ApiKey>,
    team: String,
    team_id: Option<Option<String>>,
}

impl Side {
    async fn team_id(&mut self) -> Result<Option<String>, BasetenError> {
        if let Some(id) = &self.team_id {
            return Ok(id.clone());
        }
        let id = team_id(&self.key, &self.team).await?;
        self.team_id = Some(id.clone());
        Ok(id)
    }
}

/// Whether `theirs` is the secret `mine` describes.
async fn is_mine(ctx: &Context, mine: &mut Side, theirs: &Target) -> Result<bool> {
    let Some(key) = key_of(ctx, theirs).await? else {
        return Ok(false);
    };
    if key.hash_key.fingerprint() != mine.key.hash_key.fingerprint() {
        return Ok(false);
    }
    if theirs.team() == mine.team {
        return Ok(true);
    }
    let mut their_side = Side {
        key,
        team: theirs.team().to_string(),
        team_id: None,
    };
    let (Some(mine), Some(their)) = (mine.team_id().await?, their_side.team_id().await?) else {
        return Ok(false);
    };
    Ok(mine == their)
}

/// The resource first in line before `object` that targets, spelled another way, the
/// secret `object` is to write. Nothing is read unless such a spelling exists.
pub async fn rival(object: &BasetenSecret, ctx: &Context) -> Result<Option<Claimant>> {
    let target = Target::of(object);
    let rivals = ctx.claims.rivals(&target, &Claimant::of(object));
    if rivals.is_empty() {
        return Ok(None);
    }
    let found = (ctx.credentials)
        .for_object(
            &ctx.client,
            &ctx.index,
            ctx.secret_selector.as_ref(),
            object,
        )
        .await?;
    // Without a usable key it writes nothing; the read says why.
    let Ok(key) = found else {
        return Ok(None);
    };
    let mut mine = Side {
        key,
        team: target.team().to_string(),
        team_id: None,
    };
    for (theirs, claimant) in rivals {
        if is_mine(ctx, &mut mine, &theirs).await? {
            debug!(rival = %claimant, "another spelling of the same Baseten secret is first in line");
            return Ok(Some(claimant));
        }
    }
    Ok(None)
}

/// A resource other than `object` that wants or holds the secret `baseten_name` of `team`
/// (`None`: the key's default team) of `api_key`, however it spells it.
pub async fn claimant_of(
    object: &BasetenSecret,
    ctx: &Context,
    api_key: &Arc<ApiKey>,
    team: Option<&TeamV1>,
    baseten_name: &str,
) -> Result<Option<Claimant>> {
    let me = Claimant::of(object);
    let spelled = team.map_or("", |t| t.name.as_str());
    let target = Target::new(&key_identity(object), spelled, baseten_name);
    if let Some(other) = ctx.claims.other_claimant(&target, &me) {
        return Ok(Some(other));
    }
    let others = ctx.claims.spelled_otherwise(&target, &me);
    if others.is_empty() {
        return Ok(None);
    }
    let mut mine = Side {
        key: api_key.clone(),
        team: spelled.to_string(),
        team_id: team.map(|t| Some(t.id.clone())),
    };
    for (theirs, claimant) in others {
        if is_mine(ctx, &mut mine, &theirs).await? {
            return Ok(Some(claimant));
        }
    }
    Ok(None)
}

/// Asks every resource that wants `object`'s name spelled another way to look again: a
/// value just landed under it, and one of them may turn out to be the same secret.
pub fn recheck_others(object: &BasetenSecret, ctx: &Context) {
    for other in ctx.claims.to_recheck(&Target::of(object)) {
        if other.namespace.as_deref() != object.namespace().as_deref()
            || other.name != object.name_any()
        {
            let _ = ctx.requeue.unbounded_send(other);
        }
    }
}
