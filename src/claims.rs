//! Who claims which Baseten secret, kept from the resource watch's events so that finding the
//! claimants of a name is a lookup, not a scan of every resource.
//!
//! A Baseten secret is identified by the API key (an organisation), the team and the
//! *normalised* name (Baseten treats `a-b`, `a_b` and `a.b` as one). Among the resources that
//! want one secret, the oldest (creationTimestamp, then namespace/name) wins; the others
//! write nothing. A resource also *holds* the name it last wrote (its status) and the names
//! it still has to delete (its pending deletions), so none of them is deleted from under it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use crate::crd::BasetenSecret;
use crate::maps::shrink;
pub use claimant::{Claimant, Standing};
use claimant::{Key, deletes_what_it_leaves, key};
use target::ByName;
pub use target::{OPERATOR_KEY, Target, key_identity};

mod claimant;
mod target;

/// What one resource wants and holds.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    claimant: Arc<Claimant>,
    /// The secret it is to write; while it is being deleted, the one it deletes, if any.
    wants: Option<Target>,
    /// The secret it last wrote, from its status.
    holds: Option<Target>,
    /// The secrets it wrote and is still to delete (status.pendingDeletions): held too, so
    /// another resource's cleanup never deletes one while it may be written again here.
    pending: Vec<Target>,
    /// Under `Delete`, the secrets it wrote, no longer wants and will delete (the one it
    /// held before a rename, its pending deletions), with itself ranked as deleting: nobody
    /// else writes one of them until it is deleted or let go, or the delete would remove
    /// their value.
    releases: Option<(Arc<Claimant>, Vec<Target>)>,
}

impl Entry {
    fn of(object: &BasetenSecret) -> Self {
        let status = object.status.as_ref();
        let wrote = status
            .filter(|s| s.synced_hash.is_some())
            .and_then(|s| s.baseten_name.as_deref());
        let claimant = Arc::new(Claimant::of(object));
        let wants = object
            .metadata
            .deletion_timestamp
            .is_none()
            .then(|| Target::of(object));
        // Usually what it wrote is what it wants: share the one string.
        let holds = wrote.map(|name| {
            let held = Target::in_team_of(object, name);
            match &wants {
                Some(wanted) if *wanted == held => wanted.clone(),
                _ => held,
            }
        });
        // A resource deleting its secret claims it until the delete is done.
        let wants = match claimant.standing {
            Standing::Deleting => holds.clone(),
            Standing::Writing => wants,
        };
        let pending = status.map_or_else(Vec::new, |s| {
            (s.pending_deletions.iter())
                .map(|p| match &p.team_name {
                    // The team Baseten said it wrote to.
                    Some(team) => Target::new(&key_identity(object), team, &p.baseten_name),
                    None => Target::in_team_of(object, &p.baseten_name),
                })
                .collect()
        });
        let mut entry = Self {
            claimant,
            wants,
            holds,
            pending,
            releases: None,
        };
        if deletes_what_it_leaves(object) {
            let releases: Vec<Target> = (entry.holds_other().into_iter())
                .chain(&entry.pending)
                .filter(|t| Some(*t) != entry.wants.as_ref())
                .cloned()
                .collect();
            if !releases.is_empty() {
                let releaser = Claimant {
                    standing: Standing::Deleting,
                    ..entry.claimant.as_ref().clone()
                };
                entry.releases = Some((Arc::new(releaser), releases));
            }
        }
        entry
    }

    /// The secrets it will delete, each with itself ranked as deleting.
    fn released(&self) -> impl Iterator<Item = (&Target, &Arc<Claimant>)> {
        (self.releases.iter()).flat_map(|(who, targets)| targets.iter().map(move |t| (t, who)))
    }
}

/// One resource's claim on one target.
#[derive(Clone, Debug)]
struct Claim {
    target: Target,
    claimant: Arc<Claimant>,
}

/// Claims per normalised name, first in line first. Usually one, so a sorted list rather
/// than a tree (a one-element B-tree allocates room for eleven).
type ByTarget = HashMap<ByName, Vec<Claim>>;

#[derive(Default)]
struct Inner {
    entries: HashMap<Key, Entry>,
    /// Who wants each secret.
    wanted: ByTarget,
    /// Who holds (wrote last) each secret, for entries that hold another secret than they
    /// want; an entry holding what it wants is found in `wanted`.
    held: ByTarget,
    /// Resources seen since the watch began listing again, while it does.
    relisted: Option<HashSet<Key>>,
}

fn add(map: &mut ByTarget, target: Option<&Target>, who: &Arc<Claimant>) {
    if let Some(target) = target {
        let list = map.entry(ByName(target.clone())).or_default();
        let at = list.partition_point(|c| c.claimant.as_ref() < who.as_ref());
        let claim = Claim {
            target: target.clone(),
            claimant: who.clone(),
        };
        list.insert(at, claim);
    }
}

fn remove(map: &mut ByTarget, target: Option<&Target>, who: &Claimant) {
    if let Some(target) = target
        && let Some(list) = map.get_mut(target.name())
    {
        list.retain(|c| !(c.target == *target && c.claimant.as_ref() == who));
        if list.is_empty() {
            map.remove(target.name());
        }
    }
}

/// The claims on `target`'s name, of every spelling.
fn named<'a>(map: &'a ByTarget, target: &Target) -> impl Iterator<Item = &'a Claim> {
    map.get(target.name()).into_iter().flatten()
}

impl Entry {
    /// The secret it holds when that is not the one it wants.
    fn holds_other(&self) -> Option<&Target> {
        self.holds
            .as_ref()
            .filter(|h| Some(*h) != self.wants.as_ref())
    }
}

impl Inner {
    fn winner(&self, target: &Target) -> Option<Claimant> {
        named(&self.wanted, target)
            .find(|c| c.target == *target)
            .map(|c| c.claimant.as_ref().clone())
    }

    /// Sets (or with `None` removes) a resource's entry; returns the resources whose
    /// standing changed: every claimant of a secret whose winner changed.
    fn set(&mut self, key: Key, entry: Option<Entry>) -> Vec<ObjectRef<BasetenSecret>> {
        let previous = self.entries.get(&key).cloned();
        if previous == entry {
            return Vec::new();
        }
        let touched: Vec<Target> = [&previous, &entry]
            .into_iter()
            .flatten()
            .flat_map(|e| e.wants.iter().chain(e.released().map(|(t, _)| t)))
            .cloned()
            .collect();
        let winners_before: Vec<_> = touched.iter().map(|t| self.winner(t)).collect();
        if let Some(old) = &previous {
            remove(&mut self.wanted, old.wants.as_ref(), &old.claimant);
            remove(&mut self.held, old.holds_other(), &old.claimant);
            for pending in &old.pending {
                remove(&mut self.held, Some(pending), &old.claimant);
            }
            for (target, who) in old.released() {
                remove(&mut self.wanted, Some(target), who);
            }
        }
        match entry {
            Some(new) => {
                add(&mut self.wanted, new.wants.as_ref(), &new.claimant);
                add(&mut self.held, new.holds_other(), &new.claimant);
                for pending in &new.pending {
                    add(&mut self.held, Some(pending), &new.claimant);
                }
                for (target, who) in new.released() {
                    add(&mut self.wanted, Some(target), who);
                }
                self.entries.insert(key, new);
            }
            None => {
                self.entries.remove(&key);
                shrink(&mut self.entries);
                shrink(&mut self.wanted);
                shrink(&mut self.held);
            }
        }
        let mut requeue = Vec::new();
        for (target, before) in touched.iter().zip(winners_before) {
            if self.winner(target) != before {
                // Every spelling of the name: another may be the same secret.
                requeue.extend(named(&self.wanted, target).map(|c| c.claimant.object_ref()));
            }
        }
        requeue.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        requeue.dedup();
        requeue
    }
}

/// The claims of every watched resource.
#[derive(Default)]
pub struct Claims(Mutex<Inner>);

impl Claims {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Follows one event of the resource watch; returns the resources to reconcile again
    /// because the winner of a secret they want changed.
    pub fn observe(&self, event: &watcher::Event<BasetenSecret>) -> Vec<ObjectRef<BasetenSecret>> {
        let mut inner = self.inner();
        let set = |inner: &mut Inner, object: &BasetenSecret| {
            let entry = Entry::of(object);
            inner.set(entry.claimant.id.clone(), Some(entry))
        };
        match event {
            watcher::Event::Apply(object) => set(&mut inner, object),
            watcher::Event::Delete(object) => inner.set(key(object), None),
            watcher::Event::Init => {
                inner.relisted = Some(HashSet::new());
                Vec::new()
            }
            watcher::Event::InitApply(object) => {
                if let Some(seen) = inner.relisted.as_mut() {
                    seen.insert(key(object));
                }
                set(&mut inner, object)
            }
            watcher::Event::InitDone => {
                // Resources deleted while the watch was down: no event told us.
                let Some(seen) = inner.relisted.take() else {
                    return Vec::new();
                };
                let gone: Vec<Key> = inner
                    .entries
                    .keys()
                    .filter(|k| !seen.contains(*k))
                    .cloned()
                    .collect();
                gone.into_iter().flat_map(|k| inner.set(k, None)).collect()
            }
        }
    }

    /// The resource that wins `target`: the oldest that wants it.
    pub fn winner(&self, target: &Target) -> Option<Claimant> {
        self.inner().winner(target)
    }

    /// A resource other than `me` that wants or holds `target`, if any.
    pub fn other_claimant(&self, target: &Target, me: &Claimant) -> Option<Claimant> {
        let inner = self.inner();
        let others = |map: &ByTarget| {
            named(map, target)
                .find(|c| c.target == *target && !c.claimant.is(me))
                .map(|c| c.claimant.as_ref().clone())
        };
        others(&inner.wanted).or_else(|| others(&inner.held))
    }

    /// The resources first in line before `me` that want `target`'s name spelled another
    /// way (another key reference or team spelling), each with its target, first first.
    pub fn rivals(&self, target: &Target, me: &Claimant) -> Vec<(Target, Claimant)> {
        named(&self.inner().wanted, target)
            .filter(|c| c.target != *target && c.claimant.as_ref() < me && !c.claimant.is(me))
            .map(|c| (c.target.clone(), c.claimant.as_ref().clone()))
            .collect()
    }

    /// The resources other than `me` that want or hold `target`'s name spelled another way,
    /// each with its target.
    pub fn spelled_otherwise(&self, target: &Target, me: &Claimant) -> Vec<(Target, Claimant)> {
        let inner = self.inner();
        (named(&inner.wanted, target).chain(named(&inner.held, target)))
            .filter(|c| c.target != *target && !c.claimant.is(me))
            .map(|c| (c.target.clone(), c.claimant.as_ref().clone()))
            .collect()
    }

    /// The resources that want `target`'s name spelled another way: the ones to look again
    /// once a value landed under it.
    pub fn to_recheck(&self, target: &Target) -> Vec<ObjectRef<BasetenSecret>> {
        named(&self.inner().wanted, target)
            .filter(|c| c.target != *target)
            .map(|c| c.claimant.object_ref())
            .collect()
    }

    /// How many resources are followed.
    pub fn len(&self) -> usize {
        self.inner().entries.len()
    }

    /// Whether no resource is followed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests;
